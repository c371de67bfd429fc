"""The compiled BPF object (built by setup.py from bpf/)."""
