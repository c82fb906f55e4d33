//! Host tests: a device model built on the device side, driven by the driver side over
//! simulated memory.

mod adversarial;
mod devices;
mod dma;
mod fuzz_smoke;
mod model;
mod rings;
mod shmem;
mod threads;
mod transports;
