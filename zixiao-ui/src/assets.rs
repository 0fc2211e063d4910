//! The dashboard's pages, embedded in the binary: the files of `assets/`
//! as they are in the repository, so `cargo install` gets the same
//! dashboard the sources show and nothing needs npm. The pages are
//! hand-written HTML, CSS and ES modules; `assets/vendor/` holds the one
//! piece of third-party browser code, xterm.js (the console's terminal),
//! as its npm packages distribute it, copied by `scripts/ui-vendor.sh`
//! from the versions `vendor/package-lock.json` pins (CI checks the copies
//! match).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its URL path, content type and content.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// An [`Asset`] of `assets/FILE` at `path`.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../assets/", $file)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the pages load; `/` is the single page, whose script routes
/// between views on the URL's fragment.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/style.css", "style.css", CSS),
    asset!("/app.js", "app.js", JAVASCRIPT),
    asset!("/api.js", "api.js", JAVASCRIPT),
    asset!("/views.js", "views.js", JAVASCRIPT),
    // Classic scripts (UMD builds), which define `Terminal` and `FitAddon`
    // on the window before the modules run.
    asset!("/vendor/xterm.js", "vendor/xterm.js", JAVASCRIPT),
    asset!("/vendor/addon-fit.js", "vendor/addon-fit.js", JAVASCRIPT),
    asset!("/vendor/xterm.css", "vendor/xterm.css", CSS),
    // The MIT licences ask that their notice go with every copy: the
    // binary serves them next to the code.
    asset!("/vendor/xterm.LICENSE", "vendor/xterm.LICENSE", TEXT),
    asset!(
        "/vendor/addon-fit.LICENSE",
        "vendor/addon-fit.LICENSE",
        TEXT
    ),
];

/// The pages may load only their own files and talk only to their own
/// origin; no other site may frame them. Inline styles stay refused:
/// xterm.js writes its generated styles into `<style>` elements, which
/// this refuses, so the console page copies them into a constructed
/// stylesheet (which the policy allows) rather than the policy allowing
/// every inline style.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// A route per embedded file.
pub(crate) fn router() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { respond(asset) }))
    })
}

fn respond(asset: &'static Asset) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, asset.content_type),
            // A new binary may bring new pages: revalidate each time.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module a page imports is served: a missing one would leave
    /// the dashboard blank with only a console error to say why.
    #[test]
    fn every_imported_module_is_embedded() {
        let served: Vec<&str> = ASSETS.iter().map(|asset| asset.path).collect();
        for asset in ASSETS {
            for line in asset.body.lines() {
                let Some(rest) = line.split(" from \"./").nth(1) else {
                    continue;
                };
                let module = format!("/{}", rest.split('"').next().unwrap_or_default());
                assert!(
                    served.contains(&module.as_str()),
                    "{} imports {module}",
                    asset.path
                );
            }
        }
        let index = ASSETS[0].body;
        for path in [
            "/style.css",
            "/app.js",
            "/vendor/xterm.js",
            "/vendor/addon-fit.js",
            "/vendor/xterm.css",
        ] {
            assert!(
                index.contains(&format!("\"{path}\"")),
                "index.html loads {path}"
            );
        }
    }
}
