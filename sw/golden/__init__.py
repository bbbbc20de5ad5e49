"""Golden models: reference loops, deconvolution algorithms, integer model, cost model."""
