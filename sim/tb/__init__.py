"""cocotb testbenches and the host-side link models their tests share."""
