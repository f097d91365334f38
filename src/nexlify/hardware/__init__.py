"""Hardware detection, measurement and the adaptive training plan."""
