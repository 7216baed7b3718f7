"""MICS Studio core: everything that is not UI, importable without Streamlit."""
