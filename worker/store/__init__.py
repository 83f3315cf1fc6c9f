"""Database access: Core tables and small, namespace-scoped query modules."""
