"""Link impairment: the sans-I/O model, the userspace emulator and the tc netem backend."""
