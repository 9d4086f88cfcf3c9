"""The OpenAI routes: chat completions (a lean ASGI handler), models, embeddings, files, vector stores."""
