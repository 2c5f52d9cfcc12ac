//! Small value types of the configuration, each parsed from and printed as one TOML string.
//!
//! Every type here round-trips: `parse(display(x)) == x`.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A value that could not be parsed; names what was expected and the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{input}`: {reason}")]
pub struct ValueError {
    /// What kind of value was expected, e.g. "size".
    pub kind: &'static str,
    /// The text that was given.
    pub input: String,
    /// Why it was rejected and what would be accepted.
    pub reason: String,
}

impl ValueError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr` and a string JSON schema.
macro_rules! string_value {
    ($ty:ty, $name:literal, $pattern:expr, $description:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

/// An amount of memory or disk in mebibytes, written `8GiB` or `1700MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mebibytes(pub u64);

impl Mebibytes {
    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        Self(n * 1024)
    }

    /// The size in bytes (saturating).
    pub const fn bytes(self) -> u64 {
        self.0.saturating_mul(1024 * 1024)
    }
}

impl fmt::Display for Mebibytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const TIB: u64 = 1024 * 1024;
        if self.0 != 0 && self.0.is_multiple_of(TIB) {
            write!(f, "{}TiB", self.0 / TIB)
        } else if self.0 != 0 && self.0.is_multiple_of(1024) {
            write!(f, "{}GiB", self.0 / 1024)
        } else {
            write!(f, "{}MiB", self.0)
        }
    }
}

impl FromStr for Mebibytes {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ValueError::new("size", s, reason);
        let trimmed = s.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("a unit is required: MiB, GiB or TiB (e.g. \"8GiB\")"))?;
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| err("expected a whole number followed by MiB, GiB or TiB"))?;
        let factor = match unit.trim() {
            "MiB" => 1,
            "GiB" => 1024,
            "TiB" => 1024 * 1024,
            "MB" | "GB" | "TB" | "M" | "G" | "T" | "Mi" | "Gi" | "Ti" => {
                return Err(err(
                    "use binary units spelled MiB, GiB or TiB (e.g. \"8GiB\")",
                ));
            }
            _ => return Err(err("unknown unit; use MiB, GiB or TiB")),
        };
        number
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| err("too large"))
    }
}

string_value!(
    Mebibytes,
    "Size",
    "^[0-9]+(MiB|GiB|TiB)$",
    "A size in binary units, e.g. \"8GiB\" or \"1700MiB\"."
);

/// A Kubernetes release `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
///
/// This one value drives the package channel (`v1.33`), kubeadm's `kubernetesVersion`
/// (`v1.33.5`) and the upgrade target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version, e.g. 33.
    pub minor: u32,
    /// Patch release, e.g. 5.
    pub patch: u32,
}

impl KubeVersion {
    /// The pkgs.k8s.io channel of this release, e.g. `v1.33`.
    pub fn package_channel(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }

    /// The version as kubeadm's `kubernetesVersion` wants it, e.g. `v1.33.5`.
    pub fn kubeadm_version(&self) -> String {
        format!("v{self}")
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for KubeVersion {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ValueError::new("Kubernetes version", s, reason);
        let body = s.strip_prefix('v').unwrap_or(s);
        let parts: Vec<&str> = body.split('.').collect();
        if parts.len() != 3 {
            return Err(err(
                "expected MAJOR.MINOR.PATCH, e.g. \"1.33.5\" (a channel like \"1.33\" is not a release)",
            ));
        }
        let mut numbers = [0u32; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("each of MAJOR, MINOR and PATCH must be a number"));
            }
            *slot = part.parse().map_err(|_| err("number too large"))?;
        }
        Ok(Self {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
        })
    }
}

string_value!(
    KubeVersion,
    "KubernetesVersion",
    "^v?[0-9]+\\.[0-9]+\\.[0-9]+$",
    "A Kubernetes release MAJOR.MINOR.PATCH, e.g. \"1.33.5\"."
);

/// A pinned component version such as `v0.14.9` or `1.16.2` (never `latest`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinnedVersion(String);

impl PinnedVersion {
    pub(crate) fn new_unchecked(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The version text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PinnedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PinnedVersion {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ValueError::new("pinned version", s, reason);
        if s.eq_ignore_ascii_case("latest") || s.eq_ignore_ascii_case("stable") {
            return Err(err(
                "floating versions are not allowed; pin a release such as \"v1.2.3\"",
            ));
        }
        let body = s.strip_prefix('v').unwrap_or(s);
        let (core, suffix) = match body.find(['-', '+']) {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, ""),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("expected MAJOR.MINOR.PATCH with an optional leading v"));
        }
        if body.len() != core.len()
            && (suffix.is_empty()
                || !suffix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b)))
        {
            return Err(err("the pre-release or build suffix is malformed"));
        }
        Ok(Self(s.to_owned()))
    }
}

string_value!(
    PinnedVersion,
    "PinnedVersion",
    "^v?[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.+-]+)?$",
    "An exact release, e.g. \"v0.14.9\"; \"latest\" is rejected."
);

/// An inclusive range of IPv4 addresses written `192.168.122.100-192.168.122.150`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    /// First address of the range.
    pub start: Ipv4Addr,
    /// Last address of the range (inclusive).
    pub end: Ipv4Addr,
}

impl IpRange {
    /// Whether `ip` lies inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// How many addresses the range holds (0 when `start > end`).
    pub fn len(&self) -> u64 {
        let (start, end) = (u32::from(self.start), u32::from(self.end));
        if start > end {
            0
        } else {
            u64::from(end - start) + 1
        }
    }

    /// Whether the range is empty (`start > end`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for IpRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ValueError::new("address range", s, reason);
        let (start, end) = s
            .split_once('-')
            .ok_or_else(|| err("expected FIRST-LAST, e.g. \"192.168.122.100-192.168.122.150\""))?;
        let start = start
            .trim()
            .parse()
            .map_err(|_| err("the first address is not an IPv4 address"))?;
        let end = end
            .trim()
            .parse()
            .map_err(|_| err("the last address is not an IPv4 address"))?;
        Ok(Self { start, end })
    }
}

string_value!(
    IpRange,
    "Ipv4Range",
    "^[0-9.]+-[0-9.]+$",
    "An inclusive IPv4 range FIRST-LAST, e.g. \"192.168.122.100-192.168.122.150\"."
);

/// A MAC address, written `52:54:00:0a:00:0a` (printed lower-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddress {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            ValueError::new(
                "MAC address",
                s,
                "expected six hex pairs like 52:54:00:0a:00:0a",
            )
        };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(bytes))
    }
}

string_value!(
    MacAddress,
    "MacAddress",
    "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$",
    "A MAC address, e.g. \"52:54:00:0a:00:0a\"."
);

/// A duration written the human way: `90s`, `15m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(Self).map_err(|e| {
            ValueError::new(
                "duration",
                s,
                format!("{e}; write e.g. \"90s\", \"15m\" or \"1h 30m\""),
            )
        })
    }
}

string_value!(
    HumanDuration,
    "Duration",
    "^[0-9]+[a-z]+( ?[0-9]+[a-z]+)*$",
    "A duration, e.g. \"90s\", \"15m\" or \"1h 30m\"."
);

/// A Kubernetes resource quantity for storage, e.g. `50Gi`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity(String);

impl Quantity {
    pub(crate) fn new_unchecked(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The quantity as Kubernetes reads it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Quantity {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty()
            || !["", "Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&suffix)
        {
            return Err(ValueError::new(
                "storage quantity",
                s,
                "expected a whole number with a Kubernetes suffix, e.g. \"50Gi\"",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_value!(
    Quantity,
    "StorageQuantity",
    "^[0-9]+(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$",
    "A Kubernetes storage quantity, e.g. \"50Gi\"."
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("8GiB".parse::<Mebibytes>().unwrap(), Mebibytes(8192));
        assert_eq!(
            "1700MiB".parse::<Mebibytes>().unwrap().to_string(),
            "1700MiB"
        );
        assert_eq!(Mebibytes(2048).to_string(), "2GiB");
        assert_eq!(Mebibytes(1024 * 1024).to_string(), "1TiB");
        let err = "8GB".parse::<Mebibytes>().unwrap_err();
        assert!(err.to_string().contains("GiB"), "{err}");
        assert!("8".parse::<Mebibytes>().is_err());
        assert!("GiB".parse::<Mebibytes>().is_err());
    }

    #[test]
    fn kube_versions() {
        let v: KubeVersion = "v1.33.5".parse().unwrap();
        assert_eq!(v.to_string(), "1.33.5");
        assert_eq!(v.package_channel(), "v1.33");
        assert_eq!(v.kubeadm_version(), "v1.33.5");
        for bad in ["1.33", "1.x.3", "latest", "1.33.5.1", ""] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pinned_versions_reject_floating_tags() {
        for good in ["v0.14.9", "1.16.2", "v1.0.0-rc.1", "0.9.3+build.5"] {
            assert!(good.parse::<PinnedVersion>().is_ok(), "{good}");
        }
        for bad in ["latest", "LATEST", "stable", "v1.2", "1.2.x", "v1.2.3-", ""] {
            assert!(bad.parse::<PinnedVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_macs_quantities_durations() {
        let r: IpRange = "192.168.122.100-192.168.122.150".parse().unwrap();
        assert_eq!(r.len(), 51);
        assert!(r.contains("192.168.122.120".parse().unwrap()));
        assert!("192.168.122.100".parse::<IpRange>().is_err());
        let mac: MacAddress = "52:54:00:AA:0b:0C".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:aa:0b:0c");
        assert!("52:54:00:aa:0b".parse::<MacAddress>().is_err());
        assert!("50Gi".parse::<Quantity>().is_ok());
        assert!("50GiB".parse::<Quantity>().is_err());
        assert_eq!(
            "15m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(900)
        );
        assert!("soon".parse::<HumanDuration>().is_err());
    }

    proptest! {
        #[test]
        fn size_round_trips(n in 0u64..(1 << 40)) {
            let size = Mebibytes(n);
            prop_assert_eq!(size.to_string().parse::<Mebibytes>().unwrap(), size);
        }

        #[test]
        fn size_parser_never_panics(s in "\\PC{0,16}") {
            let _ = s.parse::<Mebibytes>();
        }

        #[test]
        fn kube_version_round_trips(major in 0u32..5, minor in 0u32..100, patch in 0u32..100) {
            let v = KubeVersion { major, minor, patch };
            prop_assert_eq!(v.to_string().parse::<KubeVersion>().unwrap(), v);
        }

        #[test]
        fn duration_round_trips(secs in 1u64..1_000_000) {
            let d = HumanDuration(Duration::from_secs(secs));
            prop_assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }

        #[test]
        fn mac_round_trips(bytes in proptest::array::uniform6(any::<u8>())) {
            let mac = MacAddress(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddress>().unwrap(), mac);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = s.parse::<KubeVersion>();
            let _ = s.parse::<PinnedVersion>();
            let _ = s.parse::<IpRange>();
            let _ = s.parse::<MacAddress>();
            let _ = s.parse::<Quantity>();
        }
    }
}
