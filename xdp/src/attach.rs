//! How the steering program is attached to an interface: the mode asked for
//! and the mode obtained. This module only names modes and maps them to
//! kernel flags; `Steering::attach` does the attaching.

use std::fmt;

use aya::programs::XdpMode;

/// The XDP mode to ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native, falling back to generic (with a warning) when the driver
    /// cannot run XDP. Never falls back when another program owns the
    /// interface.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only: works on any device, at kernel-stack cost.
    Generic,
}

/// The XDP mode the program runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachedMode {
    /// Driver mode (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Generic mode (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl AttachedMode {
    pub(crate) fn xdp_mode(self) -> XdpMode {
        match self {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_mode_displays_native_or_generic() {
        assert_eq!(AttachedMode::Native.to_string(), "native");
        assert_eq!(AttachedMode::Generic.to_string(), "generic");
    }
}
