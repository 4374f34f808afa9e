"""Streamlit pages and widgets: thin views over snnet's public API."""
