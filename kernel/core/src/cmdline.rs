//! The boot command line: whitespace-separated `key=value` pairs and bare flags.
//!
//! It reaches the kernel from the boot loader (x86_64: the ramdisk; aarch64: the device tree's
//! `/chosen/bootargs`) and selects boot-time behaviour such as a self-test scenario or powering
//! off once the boot demonstration is done. Unknown keys are ignored so that older kernels boot
//! with newer tools.

/// A parsed view of a boot command line; borrows the original text.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandLine<'a> {
    text: &'a str,
}

impl<'a> CommandLine<'a> {
    /// Wraps `text`; parsing happens lazily on each query.
    pub fn new(text: &'a str) -> Self {
        Self {
            text: text.trim_matches(|c: char| c.is_whitespace() || c == '\0'),
        }
    }

    /// The whole command line, trimmed.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The value of the last `key=value` with this key, if any.
    pub fn value(&self, key: &str) -> Option<&'a str> {
        self.text
            .split_whitespace()
            .rev()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Whether `flag` appears as a bare word or as `flag=1`/`flag=yes`/`flag=on`/`flag=true`.
    pub fn flag(&self, flag: &str) -> bool {
        self.text.split_whitespace().any(|w| w == flag)
            || matches!(self.value(flag), Some("1" | "yes" | "on" | "true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_flags() {
        let cl = CommandLine::new("  test=page_fault exit log=debug log=trace\0\0");
        assert_eq!(cl.value("test"), Some("page_fault"));
        assert_eq!(cl.value("log"), Some("trace"), "the last occurrence wins");
        assert_eq!(cl.value("exit"), None);
        assert!(cl.flag("exit"));
        assert!(!cl.flag("test"));
        assert!(!cl.flag("semihosting"));
        assert_eq!(cl.as_str(), "test=page_fault exit log=debug log=trace");
    }

    #[test]
    fn flag_with_value() {
        assert!(CommandLine::new("exit=1").flag("exit"));
        assert!(!CommandLine::new("exit=0").flag("exit"));
        assert!(CommandLine::new("").value("x").is_none());
    }
}
