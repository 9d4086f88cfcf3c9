"""What every part of the benchmark shares: paths, the loopback address, core pinning, keys, the
LiteLLM pin, and the requests sent (Ada's backstory, the order question, the retrieval bot)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent  # benchmarks/: the mock, the load generator, post.lua, ceiling_app.py
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"
LITELLM_VERSION = "1.106.12"  # newest release whose [proxy] extra resolves from PyPI here; see docs
API_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-bench-key"
HOST = "127.0.0.1"
GATEWAY_CORE = "1"
DRIVER_CORE = "0"  # the upstream mock and the load generator

BACKSTORY = (
    "You are Ada, the support agent of Acme Anvils. You answer questions about orders, shipping, "
    "returns and the product catalogue. Be brief, friendly and precise. Never promise delivery dates "
    "that the order system has not confirmed; when unsure, say so and offer to open a ticket. Prices "
    "are in euros and include VAT. Returns are accepted within 30 days in the original packaging. "
    "Refuse politely to discuss competitors' products or anything unrelated to Acme."
)
MESSAGES = [
    {"role": "system", "content": "Answer in one short paragraph."},
    {"role": "user", "content": "Where is my order #4711? I ordered two anvils last Tuesday."},
]
# The retrieval bot: Ada's backstory plus a dataset of the project's own docs (a snapshot copied
# into the results directory), asked a question those docs answer, so every request retrieves.
RAG_BOT = "ada-docs"
RAG_DATASET = "chorus-docs-bench"
RAG_DOCS = "dataset-docs"  # under the results directory, next to chorus.toml
RAG_TOP_K = 5
RAG_MESSAGES = [
    {"role": "system", "content": "Answer in one short paragraph."},
    {"role": "user", "content": "How do I configure a dataset for a bot, and how are its sources cited?"},
]
