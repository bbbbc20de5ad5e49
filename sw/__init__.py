"""Host side: transforms, golden models, quantisation, driver, CLI."""
