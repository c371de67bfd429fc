"""scripts/vmtest's pieces: kernel fetch and cache, initramfs, guest boot."""
