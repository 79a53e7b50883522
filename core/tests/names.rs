//! Properties of host normalization and schema-name validation on arbitrary input.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tenant_schemas::{Host, SchemaName};

fn allowed_host_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '[' | ']' | ':')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn host_never_panics_and_is_idempotent(input in "\\PC{0,80}") {
        if let Ok(host) = Host::parse(&input) {
            prop_assert!(host.as_str().chars().all(allowed_host_char), "{:?}", host);
            prop_assert!(host.as_str().len() <= 253 + 2);
            let again = Host::parse(host.as_str()).expect("a normalized host parses");
            prop_assert_eq!(again, host);
        }
    }

    #[test]
    fn host_like_input(input in "[a-zA-Z0-9.:\\-\\[\\]]{0,70}") {
        if let Ok(host) = Host::parse(&input) {
            prop_assert!(host.as_str().chars().all(allowed_host_char));
            prop_assert_eq!(&Host::parse(host.as_str()).unwrap(), &host);
            prop_assert_eq!(&Host::parse(&input.to_uppercase()).unwrap(), &host);
        }
    }

    #[test]
    fn dns_names_round_trip(labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..6), port in 1u16..) {
        let mut name = labels.join(".");
        if name.rsplit('.').next().unwrap().bytes().all(|b| b.is_ascii_digit()) {
            name.push_str(".x");
        }
        let host = Host::parse(&format!("{}.:{port}", name.to_uppercase())).unwrap();
        prop_assert_eq!(host.as_str(), name.as_str());
    }

    #[test]
    fn schema_names_never_panic_and_are_stable(input in "\\PC{0,80}") {
        if let Ok(schema) = SchemaName::new(&input) {
            let s = schema.as_str();
            prop_assert!(!s.is_empty() && s.len() <= 63);
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            prop_assert!(!s.starts_with("pg_"));
            prop_assert_eq!(SchemaName::new(s).unwrap(), schema.clone());
            prop_assert_eq!(schema.quoted(), format!("\"{s}\""));
        }
    }

    #[test]
    fn schema_like_input(input in "[a-z_0-9]{0,70}") {
        let valid = !input.is_empty()
            && input.len() <= 63
            && !input.as_bytes()[0].is_ascii_digit()
            && !input.starts_with("pg_")
            && input != "public";
        prop_assert_eq!(SchemaName::new(&input).is_ok(), valid, "{}", input);
    }
}
