//! Stripe's form encoding: `metadata[booking_id]=x`, `payment_method_types[]=card`,
//! `expand[0]=...`, `created[gte]=...`, parsed into a tree and read with
//! Stripe's own validation messages. Equal trees mean equal parameters,
//! which is what idempotency compares.

use std::collections::{BTreeMap, BTreeSet};

use super::errors::ApiError;

/// One value of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Str(String),
    Map(BTreeMap<String, Node>),
    List(Vec<Node>),
}

/// The parameters of one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Params {
    root: BTreeMap<String, Node>,
}

impl Params {
    pub(crate) fn parse(input: &[u8]) -> Result<Self, ApiError> {
        let mut root = BTreeMap::new();
        for (key, value) in form_urlencoded::parse(input) {
            let (name, path) = split_key(&key)?;
            insert(&mut root, &key, name, &path, value.into_owned())?;
        }
        Ok(Self { root })
    }

    fn nested(root: BTreeMap<String, Node>) -> Self {
        Self { root }
    }

    /// Stripe refuses parameters it does not know.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        let known: BTreeSet<&str> = known.iter().copied().chain(["expand"]).collect();
        match self.root.keys().find(|k| !known.contains(k.as_str())) {
            Some(k) => Err(ApiError::param(
                "parameter_unknown",
                k,
                format!("Received unknown parameter: {k}"),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn str(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.root.get(name) {
            None => Ok(None),
            Some(Node::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::param(
                "parameter_invalid_string",
                name,
                format!("Invalid string: {name} must be a string"),
            )),
        }
    }

    /// A string that may not be empty when given.
    pub(crate) fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.str(name)? {
            Some(s) if s.is_empty() => Err(ApiError::param(
                "parameter_invalid_empty",
                name,
                format!(
                    "You passed an empty string for '{name}'. We assume empty values are an attempt to unset a parameter; however '{name}' cannot be unset. You should remove '{name}' from your request or supply a non-empty value."
                ),
            )),
            other => Ok(other),
        }
    }

    pub(crate) fn required(&self, name: &str) -> Result<String, ApiError> {
        self.text(name)?.ok_or_else(|| {
            ApiError::param(
                "parameter_missing",
                name,
                format!("Missing required param: {name}."),
            )
        })
    }

    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(s) = self.str(name)? else {
            return Ok(None);
        };
        s.parse().map(Some).map_err(|_| {
            ApiError::param(
                "parameter_invalid_integer",
                name,
                format!("Invalid integer: {s}"),
            )
        })
    }

    pub(crate) fn positive(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.int(name)? {
            Some(n) if n < 1 => Err(ApiError::param(
                "parameter_invalid_integer",
                name,
                format!("This value must be greater than or equal to 1 ({name})."),
            )),
            other => Ok(other),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.str(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::param(
                "parameter_invalid_boolean",
                name,
                format!("Invalid boolean: {other}"),
            )),
        }
    }

    /// One of a fixed set of strings.
    pub(crate) fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.text(name)? {
            Some(s) if !allowed.contains(&s.as_str()) => Err(ApiError::param(
                "parameter_invalid_string",
                name,
                format!("Invalid {name}: must be one of {}", allowed.join(", ")),
            )),
            other => Ok(other),
        }
    }

    /// A hash of strings, e.g. `metadata`; `metadata=` (empty) clears it.
    pub(crate) fn string_map(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        match self.root.get(name) {
            None => Ok(None),
            Some(Node::Str(s)) if s.is_empty() => Ok(Some(BTreeMap::new())),
            Some(Node::Map(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Node::Str(s) => Ok((k.clone(), s.clone())),
                    _ => Err(invalid_hash(&format!("{name}[{k}]"))),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(invalid_hash(name)),
        }
    }

    /// An array of strings, given as `a[]=x` or `a[0]=x`.
    pub(crate) fn string_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let items: Vec<&Node> = match self.root.get(name) {
            None => return Ok(None),
            Some(Node::List(l)) => l.iter().collect(),
            Some(Node::Map(m)) if m.keys().all(|k| k.parse::<usize>().is_ok()) => {
                let mut indexed: Vec<(usize, &Node)> = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                    .collect();
                indexed.sort_by_key(|(i, _)| *i);
                indexed.into_iter().map(|(_, v)| v).collect()
            }
            Some(_) => return Err(invalid_array(name)),
        };
        items
            .into_iter()
            .map(|n| match n {
                Node::Str(s) => Ok(s.clone()),
                _ => Err(invalid_array(name)),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// A hash parameter read as parameters of its own, e.g. `created[gte]`.
    pub(crate) fn hash(&self, name: &str) -> Result<Option<Params>, ApiError> {
        match self.root.get(name) {
            None => Ok(None),
            Some(Node::Map(m)) => Ok(Some(Params::nested(m.clone()))),
            Some(_) => Err(invalid_hash(name)),
        }
    }

    pub(crate) fn is_str(&self, name: &str) -> bool {
        matches!(self.root.get(name), Some(Node::Str(_)))
    }
}

fn invalid_hash(name: &str) -> ApiError {
    ApiError::param(
        "parameter_invalid_hash",
        name,
        format!("Invalid hash: {name}"),
    )
}

fn invalid_array(name: &str) -> ApiError {
    ApiError::param(
        "parameter_invalid_array",
        name,
        format!("Invalid array: {name}"),
    )
}

/// `a[b][]` → (`a`, [`b`, ``]).
fn split_key(key: &str) -> Result<(&str, Vec<&str>), ApiError> {
    let Some(open) = key.find('[') else {
        return Ok((key, Vec::new()));
    };
    let (name, mut rest) = key.split_at(open);
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix('[')
            .and_then(|r| r.find(']').map(|close| (&r[..close], &r[close + 1..])));
        let Some((segment, after)) = inner else {
            return Err(ApiError::param(
                "parameter_invalid_string",
                key,
                format!("Invalid parameter name: {key}"),
            ));
        };
        path.push(segment);
        rest = after;
    }
    Ok((name, path))
}

fn insert(
    map: &mut BTreeMap<String, Node>,
    key: &str,
    name: &str,
    path: &[&str],
    value: String,
) -> Result<(), ApiError> {
    let conflict = || invalid_hash(key);
    let Some((first, rest)) = path.split_first() else {
        map.insert(name.to_owned(), Node::Str(value));
        return Ok(());
    };
    if first.is_empty() {
        let node = map
            .entry(name.to_owned())
            .or_insert_with(|| Node::List(Vec::new()));
        let Node::List(list) = node else {
            return Err(conflict());
        };
        if rest.is_empty() {
            list.push(Node::Str(value));
            return Ok(());
        }
        // `a[][b]=x`: a list of hashes; a new element starts when the key repeats.
        let (field, deeper) = (rest[0], &rest[1..]);
        let needs_new = match list.last() {
            Some(Node::Map(m)) => m.contains_key(field) && deeper.is_empty(),
            _ => true,
        };
        if needs_new {
            list.push(Node::Map(BTreeMap::new()));
        }
        let Some(Node::Map(last)) = list.last_mut() else {
            return Err(conflict());
        };
        return insert(last, key, field, deeper, value);
    }
    let node = map
        .entry(name.to_owned())
        .or_insert_with(|| Node::Map(BTreeMap::new()));
    let Node::Map(inner) = node else {
        return Err(conflict());
    };
    insert(inner, key, first, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stripe_brackets() {
        let p = Params::parse(
            b"amount=500&metadata[booking_id]=b1&payment_method_types[]=card&payment_method_types[]=link&expand[0]=x&automatic_payment_methods[enabled]=true",
        )
        .unwrap();
        assert_eq!(p.int("amount").unwrap(), Some(500));
        assert_eq!(
            p.string_map("metadata").unwrap().unwrap()["booking_id"],
            "b1"
        );
        assert_eq!(
            p.string_list("payment_method_types").unwrap().unwrap(),
            ["card", "link"]
        );
        assert_eq!(p.string_list("expand").unwrap().unwrap(), ["x"]);
        let apm = p.hash("automatic_payment_methods").unwrap().unwrap();
        assert_eq!(apm.bool("enabled").unwrap(), Some(true));
        assert!(p.only(&["amount"]).is_err());
    }

    #[test]
    fn equal_parameters_compare_equal_in_any_order() {
        let a = Params::parse(b"a=1&metadata[x]=1&metadata[y]=2").unwrap();
        let b = Params::parse(b"metadata[y]=2&a=1&metadata[x]=1").unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            Params::parse(b"a=2&metadata[x]=1&metadata[y]=2").unwrap()
        );
    }
}
