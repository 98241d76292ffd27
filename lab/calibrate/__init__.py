"""`lab calibrate`: what the impaired path really does, against its spec."""
