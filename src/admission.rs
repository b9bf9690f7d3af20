//! `allowedNamespaces`: may an object in one namespace use a config or template in another?

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use crate::api::{AllowedNamespaces, NamespacesFrom};

/// What is needed to decide about a Selector rule: the labels of the requesting namespace.
/// `None` when they could not be read; a selector then admits nothing (fail closed).
pub type NamespaceLabels<'a> = Option<&'a BTreeMap<String, String>>;

/// True when `allowed` (on an object in `owner_ns`) lets `requester_ns` use that object.
/// The owner's own namespace is always admitted.
pub fn admits(
    allowed: &AllowedNamespaces,
    owner_ns: &str,
    requester_ns: &str,
    labels: NamespaceLabels<'_>,
) -> bool {
    if owner_ns == requester_ns {
        return true;
    }
    match allowed.from {
        NamespacesFrom::Same => false,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            let (Some(selector), Some(labels)) = (&allowed.selector, labels) else {
                return false;
            };
            match Selector::try_from(selector.clone()) {
                Ok(sel) => sel.matches(labels),
                // An invalid selector admits nothing rather than everything.
                Err(_) => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn rule(from: NamespacesFrom, team: Option<&str>) -> AllowedNamespaces {
        AllowedNamespaces {
            from,
            selector: team.map(|t| LabelSelector {
                match_labels: Some(BTreeMap::from([("team".to_string(), t.to_string())])),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn own_namespace_is_always_admitted_and_others_only_by_the_rule() {
        let same = rule(NamespacesFrom::Same, None);
        assert!(admits(&same, "mail", "mail", None));
        assert!(!admits(&same, "mail", "shop", None));
        assert!(admits(
            &rule(NamespacesFrom::All, None),
            "mail",
            "shop",
            None
        ));
    }

    #[test]
    fn selector_admits_matching_labels_and_fails_closed_without_them() {
        let sel = rule(NamespacesFrom::Selector, Some("marketing"));
        let marketing = BTreeMap::from([("team".to_string(), "marketing".to_string())]);
        let ops = BTreeMap::from([("team".to_string(), "ops".to_string())]);
        assert!(admits(&sel, "mail", "news", Some(&marketing)));
        assert!(!admits(&sel, "mail", "news", Some(&ops)));
        assert!(!admits(&sel, "mail", "news", None));
    }
}
