//! The tag expression language of FindByTags and objective selectors.
//!
//! ```text
//! expr   := or
//! or     := and ("or" and)*
//! and    := unary ("and" unary)*
//! unary  := "not" unary | atom
//! atom   := "(" expr ")" | "has" "(" key ")" | key "=" value | key "!=" value
//!         | key "in" "(" value ("," value)* ")"
//! key    := word | quoted          value := word | quoted
//! word   := [A-Za-z0-9._:/-]+       quoted := "..." | '...'  (backslash escapes \" \' \\)
//! ```
//! Keywords (`and`, `or`, `not`, `in`, `has`) are case-insensitive; quote a key or value that
//! is spelled like one. Semantics over an inode's *effective* tags (own + inherited):
//! `k=v` — k is set to v; `k!=v` — not (k=v), so it also holds when k is unset;
//! `k in (a,b)` — k is set to one of them; `has(k)` — k is set.

use std::collections::BTreeMap;

/// Longest expression accepted, in bytes.
pub const EXPR_MAX: usize = 4096;
/// Deepest nesting accepted.
pub const DEPTH_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    Has(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Evaluates over a tag map (the inode's effective tags).
    pub fn eval(&self, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::Eq(k, v) => tags.get(k) == Some(v),
            Expr::Ne(k, v) => tags.get(k) != Some(v),
            Expr::In(k, vs) => tags.get(k).is_some_and(|x| vs.contains(x)),
            Expr::Has(k) => tags.contains_key(k),
            Expr::Not(e) => !e.eval(tags),
            Expr::And(a, b) => a.eval(tags) && b.eval(tags),
            Expr::Or(a, b) => a.eval(tags) || b.eval(tags),
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn q(s: &str) -> String {
            if !s.is_empty() && s.bytes().all(is_word_byte) && keyword(s).is_none() {
                s.to_string()
            } else {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        }
        match self {
            Expr::Eq(k, v) => write!(f, "{}={}", q(k), q(v)),
            Expr::Ne(k, v) => write!(f, "{}!={}", q(k), q(v)),
            Expr::In(k, vs) => {
                let vs: Vec<String> = vs.iter().map(|v| q(v)).collect();
                write!(f, "{} in ({})", q(k), vs.join(","))
            }
            Expr::Has(k) => write!(f, "has({})", q(k)),
            Expr::Not(e) => write!(f, "not ({e})"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}

/// A parse error: byte position in the input and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub pos: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at position {}: {}", self.pos, self.message)
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._:/-".contains(&b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    And,
    Or,
    Not,
    In,
    Has,
}

fn keyword(w: &str) -> Option<Kw> {
    match w.to_ascii_lowercase().as_str() {
        "and" => Some(Kw::And),
        "or" => Some(Kw::Or),
        "not" => Some(Kw::Not),
        "in" => Some(Kw::In),
        "has" => Some(Kw::Has),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Eq,
    Ne,
    LParen,
    RParen,
    Comma,
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(q) => format!("\"{q}\""),
        Tok::Eq => "'='".into(),
        Tok::Ne => "'!='".into(),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::End => "end of expression".into(),
    }
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = input.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'=' => {
                i += 1;
                if b.get(i) == Some(&b'=') {
                    i += 1; // accept "==" as "="
                }
                Tok::Eq
            }
            b'!' => {
                if b.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Ne
                } else {
                    return Err(ParseError {
                        pos: start,
                        message: "expected '!=' (use 'not' for negation)".into(),
                    });
                }
            }
            b'"' | b'\'' => {
                let quote = c;
                i += 1;
                let mut s = Vec::new();
                loop {
                    match b.get(i) {
                        None => {
                            return Err(ParseError {
                                pos: start,
                                message: "unterminated quoted string".into(),
                            })
                        }
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match b.get(i + 1) {
                            Some(&e @ (b'\\' | b'"' | b'\'')) => {
                                s.push(e);
                                i += 2;
                            }
                            _ => {
                                return Err(ParseError {
                                    pos: i,
                                    message: "expected one of \\\" \\' \\\\ after a backslash"
                                        .into(),
                                })
                            }
                        },
                        Some(&x) => {
                            s.push(x);
                            i += 1;
                        }
                    }
                }
                // Slicing at quote/backslash boundaries keeps valid UTF-8 valid.
                Tok::Quoted(String::from_utf8(s).map_err(|_| ParseError {
                    pos: start,
                    message: "quoted string is not UTF-8".into(),
                })?)
            }
            _ if is_word_byte(c) => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                Tok::Word(input[start..i].to_string())
            }
            _ => {
                let ch = input[start..].chars().next().unwrap_or('?');
                return Err(ParseError {
                    pos: start,
                    message: format!(
                        "unexpected character {ch:?}; expected a key, a value, a quoted \
                         string, '=', '!=', '(', ')', ',' or a keyword"
                    ),
                });
            }
        };
        out.push((start, tok));
    }
    out.push((input.len(), Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn err<T>(&self, expected: &str) -> Result<T, ParseError> {
        Err(ParseError {
            pos: self.pos(),
            message: format!("expected {expected}, found {}", describe(self.peek())),
        })
    }
    fn is_kw(&self, kw: Kw) -> bool {
        matches!(self.peek(), Tok::Word(w) if keyword(w) == Some(kw))
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == t {
            self.next();
            Ok(())
        } else {
            self.err(what)
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.is_kw(Kw::Or) {
            self.next();
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        while self.is_kw(Kw::And) {
            self.next();
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(ParseError {
                pos: self.pos(),
                message: format!("expression nested deeper than {DEPTH_MAX}"),
            });
        }
        let r = if self.is_kw(Kw::Not) {
            self.next();
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.atom()
        };
        self.depth -= 1;
        r
    }

    fn key_or_value(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Word(w) if keyword(&w).is_none() => {
                self.next();
                Ok(w)
            }
            Tok::Quoted(q) => {
                self.next();
                Ok(q)
            }
            _ => self.err(what),
        }
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        if *self.peek() == Tok::LParen {
            self.next();
            let e = self.or()?;
            self.expect(Tok::RParen, "')' or 'and'/'or'")?;
            return Ok(e);
        }
        if self.is_kw(Kw::Has) {
            self.next();
            self.expect(Tok::LParen, "'(' after 'has'")?;
            let k = self.key_or_value("a tag key")?;
            self.expect(Tok::RParen, "')' after the key of has(...)")?;
            return Ok(Expr::Has(k));
        }
        let k = self.key_or_value("a tag key, 'has(', 'not' or '('")?;
        match self.peek() {
            Tok::Eq => {
                self.next();
                Ok(Expr::Eq(k, self.key_or_value("a value after '='")?))
            }
            Tok::Ne => {
                self.next();
                Ok(Expr::Ne(k, self.key_or_value("a value after '!='")?))
            }
            Tok::Word(w) if keyword(w) == Some(Kw::In) => {
                self.next();
                self.expect(Tok::LParen, "'(' after 'in'")?;
                let mut vs = vec![self.key_or_value("a value in the list")?];
                while *self.peek() == Tok::Comma {
                    self.next();
                    vs.push(self.key_or_value("a value after ','")?);
                }
                self.expect(Tok::RParen, "',' or ')' in the value list")?;
                Ok(Expr::In(k, vs))
            }
            _ => self.err("'=', '!=' or 'in' after the key"),
        }
    }
}

/// Parses an expression; errors carry the byte position and what was expected.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    if input.len() > EXPR_MAX {
        return Err(ParseError {
            pos: EXPR_MAX,
            message: format!(
                "expression is {} bytes, the limit is {EXPR_MAX}",
                input.len()
            ),
        });
    }
    let toks = lex(input)?;
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
    };
    if *p.peek() == Tok::End {
        return p.err("an expression");
    }
    let e = p.or()?;
    if *p.peek() != Tok::End {
        return p.err("'and', 'or' or end of expression");
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(k: &str, v: &str) -> Expr {
        Expr::Eq(k.into(), v.into())
    }

    #[test]
    fn parses_every_form_with_precedence() {
        assert_eq!(parse("tier=hot").expect("ok"), eq("tier", "hot"));
        assert_eq!(
            parse(" a != 'x y' ").expect("ok"),
            Expr::Ne("a".into(), "x y".into())
        );
        assert_eq!(
            parse("project in (a, \"b c\",d)").expect("ok"),
            Expr::In("project".into(), vec!["a".into(), "b c".into(), "d".into()])
        );
        assert_eq!(parse("has(owner)").expect("ok"), Expr::Has("owner".into()));
        // not > and > or
        assert_eq!(
            parse("a=1 or b=2 and not c=3").expect("ok"),
            Expr::Or(
                Box::new(eq("a", "1")),
                Box::new(Expr::And(
                    Box::new(eq("b", "2")),
                    Box::new(Expr::Not(Box::new(eq("c", "3"))))
                ))
            )
        );
        assert_eq!(
            parse("(a=1 OR b=2) AND c==3").expect("ok"),
            Expr::And(
                Box::new(Expr::Or(Box::new(eq("a", "1")), Box::new(eq("b", "2")))),
                Box::new(eq("c", "3"))
            )
        );
        assert_eq!(
            parse(r#"k="say \"hi\"\\""#).expect("ok"),
            eq("k", "say \"hi\"\\")
        );
        assert_eq!(parse("\"and\"=or2").expect("ok"), eq("and", "or2"));
        assert_eq!(
            parse("path/x:y-z.w=1").expect("ok"),
            eq("path/x:y-z.w", "1")
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "a=1 or b!=\"x y\" and not (c in (p,q) or has(d))",
            "\"in\"='a\"b'",
        ] {
            let e = parse(s).expect("parse");
            assert_eq!(parse(&e.to_string()).expect("reparse"), e, "{s}");
        }
    }

    #[test]
    fn errors_name_position_and_expectation() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "expected an expression"),
            ("tier", 4, "expected '=', '!=' or 'in' after the key"),
            ("tier=", 5, "expected a value after '='"),
            ("a=1 b=2", 4, "expected 'and', 'or' or end"),
            ("(a=1", 4, "expected ')'"),
            ("a=1 and", 7, "expected a tag key"),
            ("k in (a,", 8, "expected a value after ','"),
            ("k in a", 5, "expected '(' after 'in'"),
            ("has owner", 4, "expected '(' after 'has'"),
            ("has(a", 5, "expected ')' after the key"),
            ("k='abc", 2, "unterminated quoted string"),
            ("k=v & x=1", 4, "unexpected character '&'"),
            ("!a", 0, "expected '!='"),
            ("and=1", 0, "expected a tag key"),
            ("a=1)", 3, "expected 'and', 'or' or end"),
            ("k=\"a\\n\"", 4, "after a backslash"),
        ];
        for (input, pos, msg) in cases {
            let e = parse(input).expect_err(input);
            assert_eq!(e.pos, *pos, "{input}: {e}");
            assert!(e.message.contains(msg), "{input}: {e}");
        }
        let deep = format!("{}a=1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).expect_err("deep").message.contains("deeper"));
        let nots = format!("{}a=1", "not ".repeat(100));
        assert!(parse(&nots).expect_err("deep").message.contains("deeper"));
        let long = format!("k={}", "v".repeat(EXPR_MAX));
        assert!(parse(&long).expect_err("long").message.contains("4096"));
    }

    #[test]
    fn evaluates_over_effective_tags() {
        let tags: BTreeMap<String, String> = [("tier", "hot"), ("project", "b")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let t = |s: &str| parse(s).expect(s).eval(&tags);
        assert!(t("tier=hot"));
        assert!(!t("tier=cold"));
        assert!(t("tier!=cold"));
        assert!(t("pii!=yes"), "!= holds when the key is unset");
        assert!(t("project in (a,b)"));
        assert!(!t("missing in (a,b)"));
        assert!(t("has(tier) and not has(pii)"));
        assert!(t("tier=cold or project=b"));
        assert!(!t("not (tier=hot)"));
    }
}
