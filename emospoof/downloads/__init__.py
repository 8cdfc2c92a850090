"""Downloads of published weights and datasets: HTTP with resume, safe archives, the registries."""
