"""The Responses and Conversations APIs on the chat pipeline (wire structs, translation, events, the service)."""
