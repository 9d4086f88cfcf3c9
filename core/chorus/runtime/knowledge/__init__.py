"""Knowledge: datasets of documents that bots retrieve from and cite."""
