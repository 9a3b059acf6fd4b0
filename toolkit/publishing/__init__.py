"""Publishing: export a registered model's bundle and replicate it, verified, to every cloud."""
