"""HTTP controllers for the OpenAI-compatible API."""
