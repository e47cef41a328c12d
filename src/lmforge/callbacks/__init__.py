"""Lightning callbacks of lmforge: throughput (tokens/s, MFU) and text samples."""
