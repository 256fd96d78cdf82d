"""A simulated Pioreactor behind pigpiod's socket protocol: the board, its I2C devices and the culture."""
