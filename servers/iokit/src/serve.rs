//! A server partition's whole life on the framework: read the configuration, attach to the
//! granted device and DMA region, let the class open its device, attach each client channel
//! the class grants, then serve forever (`ioserver::Serving` over the kernel's calls).

use core::fmt;

use ioserver::serving::Line;
use ioserver::{DeviceClass, LoopSettings, MAX_CLIENTS, Server, Serving, Settings};
use rt::config::Config;
use rt::println;
use rt::syscall::{irq_ack, partition_info, poll, sleep_until, time_now_ns, wait};

use crate::{ClientNotifier, DeviceTransport, VectorRoute, client_channel, open_device};

/// A server on this partition's kernel.
pub type KernelServer<'a, C> = Server<'a, ClientNotifier, C>;

/// The loop's kernel: notifications, time, and the granted device's interrupt.
#[derive(Debug)]
pub struct RtKernel {
    /// The granted device, for acknowledging its interrupt.
    pub device: usize,
}

impl ioserver::Kernel for RtKernel {
    fn now_ns(&self) -> u64 {
        time_now_ns()
    }
    fn wait(&mut self) -> u64 {
        match wait(u64::MAX) {
            Ok(bits) => bits,
            Err(_) => {
                // No wait here (nothing to wait on): a short nap, then a look at everything.
                sleep_until(time_now_ns() + 1_000_000);
                0
            }
        }
    }
    fn poll(&mut self) -> u64 {
        poll(u64::MAX).unwrap_or(0)
    }
    fn sleep_until(&mut self, at_ns: u64) {
        sleep_until(at_ns);
    }
    fn ack_device(&mut self, bits: u64) {
        let _ = irq_ack(self.device, bits);
    }
    fn log(&mut self, line: fmt::Arguments<'_>) {
        println!("{}", line);
    }
}

/// A channel's settings in the server's configuration (`channels.C.KEY`).
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings<'c> {
    pub config: Config<'c>,
    pub channel: &'c str,
}

impl Settings for ChannelSettings<'_> {
    fn text(&self, key: &str) -> Option<&str> {
        self.config.channel_get(self.channel, key)
    }
    fn number(&self, key: &str) -> Option<u64> {
        self.config.channel_u64(self.channel, key)
    }
    fn channel(&self) -> Option<&str> {
        Some(self.channel)
    }
}

/// What a class needs to open its real device.
pub struct Opening<'c> {
    /// The server's configuration.
    pub config: Config<'c>,
    /// The device's name in the description.
    pub name: &'c str,
    /// The DMA region's name in the description.
    pub dma_name: &'c str,
    transport: Option<DeviceTransport>,
    /// Which interface it is (for the log).
    pub kind: &'static str,
    /// The server's DMA region.
    pub dma: virtio::dma::DmaRegion<'static>,
    /// This partition's generation (restarts so far).
    pub generation: u32,
    route: Option<VectorRoute>,
    routed: bool,
    info: abi::DeviceInfo,
    device: usize,
}

impl Opening<'_> {
    /// Integer setting `key` of the server (checked when the image was built); `None`, said,
    /// only in an image built from an unchecked description.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.config.need_u64(key)
    }

    /// The transport to the device (once).
    pub fn take_transport(&mut self) -> Option<DeviceTransport> {
        self.transport.take()
    }

    /// Whether the device's interrupt reaches the server (after the queues were routed), as
    /// the device's log line says: else the server polls it.
    pub fn interrupts(&self) -> bool {
        self.info.irq_bits != 0
            && ((self.routed && self.route.is_some()) || self.info.msix_vectors == 0)
            && self.config.get_bool("poll") == Some(false)
    }

    /// The granted device's handle (for acknowledging its interrupt at the kernel).
    pub fn device(&self) -> usize {
        self.device
    }

    /// The notification bits of the device's interrupt.
    pub fn irq_bits(&self) -> u64 {
        self.info.irq_bits
    }

    /// How the log says it.
    pub fn interrupts_word(&self) -> &'static str {
        if self.interrupts() {
            "on"
        } else {
            "off (polling)"
        }
    }

    /// Points queue `queue`'s MSI-X vector at the server (call it as each queue is enabled);
    /// without MSI-X nothing is needed.
    pub fn route(&mut self, queue: u16) {
        if let Some(r) = self.route.as_mut() {
            self.routed &= r.route(queue);
        }
    }
}

impl fmt::Debug for Opening<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening").field("name", &self.name).finish()
    }
}

/// What a server partition is, before it runs.
#[derive(Debug, Clone, Copy)]
pub struct ServerProgram {
    /// The setting that names the device (`device`; the block server's `disk`, the network
    /// server's `nic`). Its default, and those of `dma`, `poll`, `poll-us` and `report-ms`,
    /// are in the program's schema (servers/iokit/server-schema.toml and the server's own).
    pub device_key: &'static str,
    /// Bytes of ring area in each client channel.
    pub client_ring_len: usize,
    /// Sleep between polls when the device's interrupt does not reach the server.
    pub poll_period_ns: u64,
}

/// Runs a server partition of class `C`: `open` brings up the real device and makes the class
/// (it logs the device's line; `None`: stop), then every channel the class grants is attached
/// and served forever; `after_pass` runs after every pass.
pub fn run<C: DeviceClass>(
    program: ServerProgram,
    open: impl FnOnce(&mut Opening<'_>) -> Option<C>,
    mut after_pass: impl FnMut(&mut KernelServer<'static, C>, &mut RtKernel),
) {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 4096];
    let Some(config) = rt::config::load(&mut text) else {
        return;
    };
    let (Some(device_name), Some(dma_name), Some(poll_us), Some(report_ms)) = (
        config.need(program.device_key),
        config.need("dma"),
        config.need_u64("poll-us"),
        config.need_u64("report-ms"),
    ) else {
        return;
    };
    let Some((device, info)) = crate::granted_device(device_name) else {
        return;
    };
    let Some(dma) = crate::dma_region(dma_name) else {
        return;
    };
    let (transport, route, kind) = match open_device(device, &info) {
        Ok(t) => t,
        Err(e) => {
            println!("{device_name}: no device ({e:?}); stopping");
            return;
        }
    };
    let mut opening = Opening {
        config,
        name: device_name,
        dma_name,
        transport: Some(transport),
        kind,
        dma,
        generation,
        route,
        routed: true,
        info,
        device,
    };
    let Some(class) = open(&mut opening) else {
        return;
    };
    let interrupts = opening.interrupts();
    let mut server: KernelServer<'static, C> = Server::new(class);
    let mut names: [&str; MAX_CLIENTS] = [""; MAX_CLIENTS];
    for channel in config.channels() {
        let settings = ChannelSettings { config, channel };
        let spec = match server.class_ref().spec(&settings) {
            Ok(spec) => spec,
            Err(e) => {
                println!("{channel}: not served: {e:?}");
                continue;
            }
        };
        let Some((memory, notifier, phys)) = client_channel(&config, channel) else {
            continue;
        };
        match server.add_client(
            memory,
            program.client_ring_len,
            &spec,
            time_now_ns(),
            notifier,
        ) {
            Ok(index) => {
                names[index] = channel;
                // The kernel tells us the region's physical address only if the description
                // makes us its DMA owner: then the device can reach the client's buffers.
                if phys != 0 {
                    server.set_dma_base(index, phys);
                }
                let mut line = Line::default();
                if let Some(client) = server.client(index) {
                    let _ = C::describe(&client.class, &mut line);
                }
                println!("{channel}: {}", line.as_str());
            }
            Err(e) => println!("{channel}: cannot lay out the channel: {e:?}"),
        }
    }
    let settings = LoopSettings {
        interrupts,
        irq_bits: info.irq_bits,
        poll_ns: poll_us * 1000,
        poll_period_ns: program.poll_period_ns,
        report_ns: report_ms * 1_000_000,
    };
    let mut kernel = RtKernel { device };
    Serving::new(names, settings, time_now_ns()).run(&mut server, &mut kernel, &mut after_pass)
}
