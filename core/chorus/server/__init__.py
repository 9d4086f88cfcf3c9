"""The HTTP edge: the Litestar app, authentication, request ids, error envelopes and the
controllers of the OpenAI routes. Everything below it is reached through the runtime.
"""
