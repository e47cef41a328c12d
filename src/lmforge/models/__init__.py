"""nn.Modules and their builders: the MLP, causal LMs from `transformers` configs, heads."""
