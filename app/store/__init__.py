"""The data layer: Django ORM used standalone. The only package that touches the ORM."""
