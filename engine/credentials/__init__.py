"""Adapter: credential providers (the local generator, or one named by CREDENTIAL_PROVIDER)."""
