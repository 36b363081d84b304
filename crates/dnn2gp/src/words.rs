//! Option words, defined once: [`words!`](crate::words!) makes an enum whose variants are spelled by words
//! (the first of each list is the canonical one that `Display` and serde write, the others are
//! aliases that parsing accepts, case-insensitively), and an unknown word is
//! [`crate::Error::Word`] naming the words there are. The command line, Python and the saved
//! files all parse through these.

/// `a`, `a or b`, `a, b or c`.
pub fn either(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// An enum of option words: `words! { /// doc  pub enum Space("space") { /// doc  Auto =
/// ["auto"], Weight = ["weight", "weights"] } }`. Generates `WORDS` (the canonical words),
/// `word()`, `FromStr` (case-insensitive, aliases accepted, [`crate::Error::Word`] otherwise),
/// `Display` and serde (the canonical word).
#[macro_export]
macro_rules! words {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = [$canonical:literal $(, $alias:literal)* $(,)?] ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// The canonical words, in the order of the variants.
            pub const WORDS: &'static [&'static str] = &[$($canonical),+];

            /// The canonical word.
            pub fn word(self) -> &'static str {
                match self {
                    $( $name::$variant => $canonical ),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                match s.to_ascii_lowercase().as_str() {
                    $( $canonical $(| $alias)* => Ok($name::$variant), )+
                    _ => Err($crate::Error::Word {
                        what: $what,
                        got: s.to_string(),
                        expected: Self::WORDS,
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.word())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.word())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::string::String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::words! {
        /// A test enum.
        enum Colour("colour") {
            /// Red.
            Red = ["red", "r"],
            /// Green.
            Green = ["green"],
        }
    }

    #[test]
    fn words_parse_print_and_refuse() {
        assert_eq!("R".parse::<Colour>().unwrap(), Colour::Red);
        assert_eq!(Colour::Green.to_string(), "green");
        assert_eq!(serde_json::to_string(&Colour::Red).unwrap(), "\"red\"");
        let e = "blue".parse::<Colour>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown colour 'blue' (expected red or green)"
        );
        assert!(matches!(e, crate::Error::Word { what: "colour", .. }));
        assert_eq!(super::either(&["a", "b", "c"]), "a, b or c");
    }
}
