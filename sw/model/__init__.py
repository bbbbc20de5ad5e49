"""Networks: float description, kernel transforms, quantiser, importers, zoo, training."""
