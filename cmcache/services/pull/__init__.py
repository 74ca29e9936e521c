"""What `pull` asks for, resolved into downloads: models, bundles, Hugging Face repositories."""
