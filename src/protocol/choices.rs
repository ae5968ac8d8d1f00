//! The choices a request, the configuration file and both command lines
//! offer, one type each: the same type is the request's field, the config's
//! value, the daemon's `--quiesce` and rbdsnapctl's `--quiesce`/`--flatten`,
//! and the core's decision. Its names on the wire, in TOML, in the JSON
//! schema and on the command line come from one list, so no layer parses a
//! string again or falls back to a default for a name it did not expect.

use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, Schema, SchemaGenerator};

/// One closed set of names: the enum, its wire names, parsing with a
/// message that lists them, serde, JSON schema and clap.
macro_rules! choice {
    (
        $(#[doc = $doc:literal])*
        $name:ident, $field:literal, default $default:ident {
            $( $(#[doc = $vdoc:literal])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
        pub enum $name {
            $( $(#[doc = $vdoc])* #[value(name = $text)] $variant, )+
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Their names on the wire, in TOML and on the command line.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// What the field is called, for messages.
            pub const FIELD: &'static str = $field;

            /// The value's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(not_one_of($field, other, $name::NAMES)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let values = [$( (doc(&[$($vdoc),*]), $text) ),+];
                one_of(&doc(&[$($doc),*]), &values)
            }
        }
    };
}

fn not_one_of(field: &str, given: &str, names: &[&str]) -> String {
    format!("{field} {given:?} is not one of {}", names.join(", "))
}

/// A doc comment's lines as one text.
fn doc(lines: &[&str]) -> String {
    let lines: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    lines.join("\n")
}

/// The schema of a choice: a string, one of `values`, each described.
fn one_of(description: &str, values: &[(String, &str)]) -> Schema {
    let each: Vec<_> = values
        .iter()
        .map(|(doc, name)| serde_json::json!({"const": name, "type": "string", "description": doc}))
        .collect();
    json_schema!({"description": description, "oneOf": each})
}

choice! {
    /// Whether to freeze the guest's filesystems around the snapshot.
    Quiesce, "quiesce", default Preferred {
        /// Fail (before any snapshot is taken) when the guest cannot be frozen.
        Required = "required",
        /// Freeze when possible; otherwise take a crash-consistent snapshot
        /// and say why.
        Preferred = "preferred",
        /// Never freeze: crash-consistent.
        Off = "off",
    }
}

choice! {
    /// What to do about the clone's dependency on the source snapshot.
    Flatten, "flatten", default Sync {
        /// Copy the parent's data into the new image before answering (Nova).
        Sync = "sync",
        /// Answer once the new image and its `snap` exist, then flatten in
        /// this daemon (resumed after a restart). Needs clone v2 (the
        /// temporary snapshot goes at once, to the trash until the flatten
        /// ends) and the deep-flatten feature (so `snap` is detached too).
        Background = "background",
        /// Like `background`, but the flatten is a Ceph manager task: it
        /// goes on whatever happens to this host.
        Cluster = "cluster",
        /// Leave the new image a clone of the source: fast, but the source
        /// keeps a snapshot the new image depends on until the daemon
        /// flattens it when the source goes.
        None = "none",
    }
}

impl Flatten {
    /// Whether the flatten runs after the answer (the location is usable
    /// before the image is independent of its source).
    pub fn after_answer(self) -> bool {
        matches!(self, Flatten::Background | Flatten::Cluster)
    }
}

choice! {
    /// What a snapshot request does when its domain has one running.
    OnBusy, "on_busy", default Reject {
        /// Answer `busy` at once.
        Reject = "reject",
        /// Wait until the domain's running snapshot has answered.
        Wait = "wait",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_value() {
        for q in Quiesce::ALL {
            assert_eq!(q.as_str().parse::<Quiesce>(), Ok(*q));
        }
        for f in Flatten::ALL {
            assert_eq!(serde_json::to_value(f).expect("serialises"), f.as_str());
        }
        assert_eq!(OnBusy::NAMES, ["reject", "wait"]);
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_names() {
        let e =
            serde_json::from_value::<Quiesce>(serde_json::json!("always")).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "quiesce \"always\" is not one of required, preferred, off"
        );
        assert!(serde_json::from_value::<Flatten>(serde_json::json!(3)).is_err());
        assert!("Sync".parse::<Flatten>().is_err(), "names are exact");
    }

    #[test]
    fn clap_offers_the_same_names() {
        use clap::ValueEnum;
        let names: Vec<_> = Flatten::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        assert_eq!(names, Flatten::NAMES);
    }
}
