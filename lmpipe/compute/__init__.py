"""The hardware a process runs on: cores, CPU features, the device and precision to train in, throughput."""
