//! Paging through a long list: a [`Page`] asks for at most `size` items
//! after a [`PageToken`]; the answer says where the next page starts.
//!
//! Lists are in name order and a token names the last item a page held
//! (keyset paging, not an offset): an item created or deleted between two
//! pages neither shifts nor repeats the others, and a token stays valid
//! after the item it names is gone. Tokens are opaque to callers (hex, so
//! they survive a shell and a URL unquoted) and checked when they come
//! back: one that was not made here is `InvalidArgument` naming
//! `page_token`.
//!
//! In-process, a size of 0 means every item. A server answers at most
//! [`MAX_PAGE_SIZE`] items per call, [`DEFAULT_PAGE_SIZE`] when asked for
//! 0, so no list outgrows a message; [`Client`](super::Client)'s
//! `list_instances` follows the pages to the end for callers that want
//! everything.

use std::fmt;

use crate::error::Error;
use crate::model::validate_name;

/// The most items a server answers in one page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// What a server answers when asked for a page of size 0.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// Where the next page of a list starts: after the item it names. In
/// JSON, the text callers pass back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PageToken {
    /// The name of the last item of the page before.
    after: String,
}

impl PageToken {
    /// The token of a page that ended with the item named `last`.
    pub(crate) fn after(last: &str) -> Self {
        PageToken {
            after: last.to_owned(),
        }
    }

    /// The name the next page starts after.
    pub(crate) fn last_name(&self) -> &str {
        &self.after
    }
}

impl fmt::Display for PageToken {
    /// The token as callers pass it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.after.bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl TryFrom<&str> for PageToken {
    type Error = Error;

    /// A token as [`Display`](fmt::Display) wrote it. Errors:
    /// `InvalidArgument` naming `page_token`.
    fn try_from(text: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::invalid(
                "page_token",
                "is not a token a list answered; pass next_page_token back as it came",
            )
        };
        if text.is_empty() || text.len() % 2 != 0 || text.len() > 2 * 63 {
            return Err(invalid());
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(text.get(i..i + 2).ok_or_else(invalid)?, 16)
                    .map_err(|_| invalid())
            })
            .collect::<Result<Vec<u8>, Error>>()?;
        let after = String::from_utf8(bytes).map_err(|_| invalid())?;
        validate_name("page_token", &after).map_err(|_| invalid())?;
        Ok(PageToken { after })
    }
}

impl From<PageToken> for String {
    fn from(token: PageToken) -> String {
        token.to_string()
    }
}

impl TryFrom<String> for PageToken {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        PageToken::try_from(text.as_str())
    }
}

/// Which page of a list to answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// At most this many items; 0: every item in-process, the server's
    /// default over the network.
    pub size: u32,
    /// Start after this token; `None`: from the first item.
    pub token: Option<PageToken>,
}

impl Page {
    /// Every item (in-process; a server answers its default page).
    pub fn all() -> Self {
        Page::default()
    }

    /// The first `size` items.
    pub fn first(size: u32) -> Self {
        Page { size, token: None }
    }

    /// The page a frontend was given: at most `size` items (0: the
    /// default), after `token` as a list answered it (`None`: from the
    /// first). Errors: `InvalidArgument` (`page_token`).
    pub fn parse(size: u32, token: Option<&str>) -> Result<Self, Error> {
        let token = token.map(PageToken::try_from).transpose()?;
        Ok(Page { size, token })
    }

    /// This page's size, capped for a server: 0 becomes
    /// [`DEFAULT_PAGE_SIZE`], more than [`MAX_PAGE_SIZE`] becomes that.
    pub fn capped(self) -> Self {
        let size = match self.size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        Page { size, ..self }
    }

    /// The part of `items` (in name order, named by `name`) this page
    /// holds, and the token of the next page when there are more.
    pub(crate) fn cut<T>(
        &self,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Option<PageToken>) {
        let start = match &self.token {
            Some(token) => items.partition_point(|item| name(item) <= token.last_name()),
            None => 0,
        };
        let mut rest: Vec<T> = items.into_iter().skip(start).collect();
        if self.size == 0 || rest.len() <= self.size as usize {
            return (rest, None);
        }
        rest.truncate(self.size as usize);
        let next = rest.last().map(|last| PageToken::after(name(last)));
        (rest, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i-{i:03}")).collect()
    }

    #[test]
    fn a_page_parses_from_what_a_frontend_was_given() {
        assert_eq!(Page::parse(0, None).expect("no token"), Page::all());
        let token = PageToken::try_from("692d303031").expect("a token");
        let page = Page::parse(7, Some(&token.to_string())).expect("a token a list answered");
        assert_eq!(
            page,
            Page {
                size: 7,
                token: Some(token)
            }
        );
        let err = Page::parse(7, Some("not a token")).expect_err("refused");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("page_token"), "{err}");
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let all = names(7);
        let mut page = Page::first(3);
        let mut seen = Vec::new();
        loop {
            let (items, next) = page.cut(all.clone(), |s| s.as_str());
            assert!(items.len() <= 3);
            seen.extend(items);
            match next {
                Some(token) => {
                    let text = token.to_string();
                    page.token = Some(PageToken::try_from(text.as_str()).expect("round trip"));
                }
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn a_token_of_a_deleted_item_still_continues_after_it() {
        let mut all = names(5);
        let page = Page {
            size: 2,
            token: Some(PageToken::after("i-001")),
        };
        all.remove(1);
        let (items, _) = page.cut(all, |s| s.as_str());
        assert_eq!(items, ["i-002", "i-003"]);
    }

    #[test]
    fn size_zero_is_everything_in_process_and_capped_for_a_server() {
        let (items, next) = Page::all().cut(names(3), |s| s.as_str());
        assert_eq!((items.len(), next), (3, None));
        assert_eq!(Page::all().capped().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::first(1_000_000).capped().size, MAX_PAGE_SIZE);
        assert_eq!(Page::first(7).capped().size, 7);
    }

    #[test]
    fn foreign_tokens_are_refused_naming_the_field() {
        for bad in ["", "abc", "zz", "2f", "2e2e2f6574632f", &"61".repeat(64)] {
            let err = PageToken::try_from(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains("page_token"), "{bad}: {err}");
        }
    }
}
