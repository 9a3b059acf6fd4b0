"""Infrastructure as code (coming next): Pulumi programs for an identical serving stack on each cloud."""
