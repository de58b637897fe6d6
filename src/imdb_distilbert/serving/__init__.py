"""Serving: a web server (JSON API and a page) over any inference backend, and the same page inside a notebook."""
