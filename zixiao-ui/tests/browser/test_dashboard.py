"""The dashboard in a real headless Chromium (Debian's), driven by Playwright,
against a real `zixiao ui` on the embedded default: a fresh state directory,
whose daemon `zixiao ui` runs (no other runs), with containers on the test
containerd. What
the page shows is checked against what the CLI says; every page leaves a
screenshot in $ZIXIAO_UI_SCREENSHOTS.

Run by scripts/ui-tests.sh, which installs Chromium and Playwright."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ZIXIAO = os.environ["ZIXIAO_BIN"]
SOCKET = os.environ["ZIXIAO_TEST_CONTAINERD_SOCKET"]
BUSYBOX = os.environ["ZIXIAO_TEST_BUSYBOX_OCI"]
SHOTS = Path(os.environ["ZIXIAO_UI_SCREENSHOTS"])
# zixiao-vmm's test guest (a tiny kernel counting on its serial console):
# the microVM whose snapshots the page shows. scripts/ui-tests.sh finds it.
VMM_GUEST = os.environ.get("ZIXIAO_VMM_TEST_GUEST", "")
RUNTIMES_REQUIRED = os.environ.get("ZIXIAO_REQUIRE_RUNTIMES") == "1"
CHROMIUM = os.environ.get("ZIXIAO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# A stop waits for the container to end: busybox's sleep as PID 1 ignores
# SIGTERM, so it ends at the runtime's 10 s grace period.
ACTION_TIMEOUT_MS = 40_000


def cli(state, *args):
    """Runs the CLI on `state`; its stdout, or a failure naming its stderr."""
    done = subprocess.run(
        [ZIXIAO, "--state-dir", state, "--containerd-socket", SOCKET, *args],
        capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"zixiao {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


def instances(state):
    """The CLI's instance list, by name."""
    return {i["name"]: i for i in json.loads(cli(state, "instance", "list", "-o", "json"))}


def started(state, *args, marker, env=None):
    """Starts a long-running `zixiao ... args` (with `env` added to the
    environment) and waits for its line containing `marker`; returns the
    process and that line. Its log goes to `state`/server.log, which a
    failing run prints."""
    with open(Path(state) / "server.log", "ab") as log:
        process = subprocess.Popen(
            [ZIXIAO, "--state-dir", state, "--containerd-socket", SOCKET, *args],
            stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if marker in line:
            return process, line.strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"zixiao {' '.join(args)} never printed {marker!r}")


def wait_for(condition, what, timeout=30):
    """Polls `condition` until it holds, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def check_overview(page, url, node):
    page.goto(url)
    expect(page.get_by_test_id("nodes-total").locator(".n")).to_have_text("1")
    expect(page.get_by_test_id("nodes-ready").locator(".n")).to_have_text("1")
    expect(page.get_by_test_id("instances-total").locator(".n")).to_have_text("0")
    expect(page.locator(f'[data-testid=node-table] tr[data-node="{node["hostname"]}"]')).to_be_visible()
    cpus = page.get_by_test_id("gauge-cpus")
    # What placement may reserve: the node's cores times its CPU allocation ratio.
    allocatable = node["capacity"]["cpus"] * node["allocation_ratios"]["cpu"]
    expect(cpus).to_contain_text(f"0 / {allocatable:g} cores")
    expect(page.locator("#live")).to_have_text("live")
    shot(page, "overview")


def submit_create_form(page, url, **fields):
    """Fills the instance list's create form with `fields` (input names)
    and submits it."""
    page.goto(f"{url}#/instances")
    form = page.get_by_test_id("create-form")
    for name, value in fields.items():
        form.locator(f"input[name={name}]").fill(value)
    form.get_by_role("button", name="Create").click()


def create_from_the_page(page, url, state):
    submit_create_form(page, url, name="ui-web", image="busybox", command="sleep 600", memory_mib="64")
    expect(page.locator("#notice")).to_contain_text("created ui-web: running", timeout=ACTION_TIMEOUT_MS)
    row = page.locator('[data-testid=instance-table] tr[data-instance="ui-web"]')
    expect(row.locator("[data-status]")).to_have_text("running")
    listed = instances(state)
    assert listed["ui-web"]["status"] == "running", listed
    assert listed["ui-web"]["spec"]["command"] == ["sleep", "600"], listed
    shot(page, "instances")


def bad_create_is_refused(page, url, state):
    submit_create_form(page, url, name="Not_A_Name", image="busybox")
    expect(page.locator("#notice")).to_contain_text("invalid_argument: invalid name")
    assert "Not_A_Name" not in instances(state)
    shot(page, "instances-refused")


def filter_and_live_list(page, url, state):
    page.goto(f"{url}#/instances")
    page.get_by_test_id("filter-status").select_option("stopped")
    expect(page).to_have_url(f"{url}#/instances?status=stopped")
    expect(page.get_by_text("No instances match.")).to_be_visible()
    page.get_by_test_id("filter-status").select_option("running")
    expect(page.locator('tr[data-instance="ui-web"]')).to_be_visible()
    # Made elsewhere: the page shows it without a reload (the watch stream).
    cli(state, "instance", "create", "--name", "cli-web", "--type", "container",
        "--image", "busybox", "--cpus", "1", "--memory", "64", "--", "sleep", "600")
    expect(page.locator('tr[data-instance="cli-web"]')).to_be_visible()
    shot(page, "instances-filtered")
    page.goto(url)
    expect(page.get_by_test_id("instances-total").locator(".n")).to_have_text("2")
    expect(page.get_by_test_id("instances-container").locator(".n")).to_have_text("2")
    expect(page.get_by_test_id("type-status")).to_contain_text("2")
    expect(page.get_by_test_id("gauge-cpus")).to_contain_text("2 / ")
    # The bar shows the share: memory is a sliver, not a full bar. Bar and
    # fill are measured in one go, and again until they agree: the live
    # view may redraw the overview between two separate reads.
    page.wait_for_function("""() => {
        const gauge = document.querySelector('[data-testid=gauge-memory]');
        if (!gauge) return false;
        const bar = gauge.querySelector('.bar').getBoundingClientRect().width;
        const fill = gauge.querySelector('.fill').getBoundingClientRect().width;
        return bar > 0 && fill > 0 && fill / bar < 0.5;
    }""", timeout=5_000)
    shot(page, "overview-with-instances")


def usage_charts(page, url, state):
    """A running instance's page charts the server's samples of its CPU and
    memory, and keeps drawing new ones; the CLI sees the same history."""
    page.goto(f"{url}#/instances/ui-web")
    usage = page.get_by_test_id("usage")
    memory = usage.get_by_test_id("chart-memory")
    # Samples every 0.5 s (ZIXIAO_STATS_SAMPLE_MS); the panel asks every 5 s.
    page.wait_for_function("""() => {
        const chart = document.querySelector('[data-testid=chart-memory]');
        return chart && Number(chart.dataset.points) >= 3 && chart.querySelector('polyline');
    }""", timeout=20_000)
    expect(memory).to_contain_text("now ")
    expect(memory).to_contain_text(" MiB")
    expect(memory.locator("figcaption")).to_contain_text("limit 64 MiB")
    cpu = usage.get_by_test_id("chart-cpu")
    assert int(cpu.get_attribute("data-points")) >= 2, cpu.get_attribute("data-points")
    expect(cpu.locator("polyline")).to_have_count(1)
    before = int(memory.get_attribute("data-points"))
    page.wait_for_function(f"""() => Number(document.querySelector(
        '[data-testid=chart-memory]').dataset.points) > {before}""", timeout=20_000)
    history = json.loads(cli(state, "instance", "stats", "ui-web", "--history", "-o", "json"))
    assert len(history) >= before, (len(history), before)
    assert all(sample["memory_bytes"] > 0 for sample in history), history[-1]
    shot(page, "instance-usage")


def node_usage_charts(page, url, state):
    """A node's page charts what its instances use together (ui-web runs
    there), as `node stats` reports it, beside what the whole host uses, on
    the host's capacity."""
    node = json.loads(cli(state, "node", "list", "-o", "json"))[0]
    page.goto(f"{url}#/nodes/{node['id']}")
    usage = page.get_by_test_id("node").get_by_test_id("usage")
    page.wait_for_function("""() => {
        const chart = document.querySelector('[data-testid=node] [data-testid=chart-memory]');
        return chart && Number(chart.dataset.points) >= 3 && chart.querySelector('polyline');
    }""", timeout=20_000)
    memory = usage.get_by_test_id("chart-memory")
    expect(memory.locator("figcaption")).to_contain_text(f"of {node['capacity']['memory_mib']} MiB")
    # Not "now 0.000 MiB": the running ui-web's memory is in the sum.
    expect(memory.locator(".legend:not(.host)")).not_to_contain_text("now 0.000 ")
    # The host's own line: the daemon reads this machine, which uses more
    # than ui-web alone.
    page.wait_for_function("""() => document.querySelector(
        '[data-testid=node] [data-testid=chart-memory] polyline.host')""", timeout=20_000)
    expect(memory.locator(".legend.host")).to_contain_text("host: now ")
    cpu = usage.get_by_test_id("chart-cpu")
    expect(cpu.locator("figcaption")).to_contain_text(f"of {node['capacity']['cpus']} cores")
    samples = json.loads(cli(state, "node", "stats", node["id"], "-o", "json"))
    assert samples[-1]["instances"] >= 1 and samples[-1]["memory_bytes"] > 0, samples[-1]
    hosted = [s for s in samples if s["host_memory_bytes"] is not None]
    assert hosted and hosted[-1]["host_memory_bytes"] > hosted[-1]["memory_bytes"], samples[-1]
    shot(page, "node-usage")


def stop_from_the_page(page, url, state):
    page.goto(f"{url}#/instances/ui-web")
    detail = page.get_by_test_id("instance")
    expect(detail).to_have_attribute("data-status", "running")
    fields = detail.locator("dl.fields")
    expect(fields).to_contain_text("sleep 600")
    expect(fields).to_contain_text("64 MiB")
    expect(fields).not_to_contain_text("[object")
    shot(page, "instance")
    detail.locator("[data-action=stop]").click()
    expect(page.get_by_test_id("instance")).to_have_attribute(
        "data-status", "stopped", timeout=ACTION_TIMEOUT_MS)
    assert instances(state)["ui-web"]["status"] == "stopped"
    shot(page, "instance-stopped")
    page.goto(f"{url}#/nodes")
    expect(page.get_by_test_id("node-table")).to_be_visible()
    shot(page, "nodes")
    page.get_by_test_id("node-table").get_by_role("link").first.click()
    detail = page.get_by_test_id("node")
    expect(detail.get_by_test_id("node-instances")).to_contain_text("ui-web")
    expect(detail.get_by_test_id("node-instances")).to_contain_text("stopped")
    expect(detail.get_by_test_id("gauge-instances")).to_contain_text("/ ")
    shot(page, "node")


def console_in_the_page(page, url, state):
    """A shell in a container with stdin, in the page's terminal (xterm.js):
    keys typed into the terminal reach the shell, what it answers shows in
    the terminal's rows, and `exit` ends the session."""
    cli(state, "instance", "create", "--name", "ui-sh", "--type", "container", "--image", "busybox",
        "--memory", "64", "--label", "zixiao.io/stdin=true", "--", "sh")
    page.goto(f"{url}#/instances/ui-sh")
    console = page.get_by_test_id("console")
    # A container's stdin is a pipe: the page echoes and sends whole lines.
    expect(console).to_have_attribute("data-console-mode", "line")
    console.locator("[data-action=console]").click()
    expect(console.get_by_test_id("console-state")).to_have_text("connected")
    rows = console.locator(".xterm-rows")
    expect(rows).to_be_visible()
    # Sized to its panel, wider than a default 80 columns; and the styles
    # xterm.js computes (font size 13 px, `white-space: pre`) apply although
    # the page's policy refuses inline styles.
    looks = page.evaluate("""() => {
        const box = document.querySelector('[data-testid=console-output] .xterm-screen').getBoundingClientRect();
        const rows = getComputedStyle(document.querySelector('[data-testid=console-output] .xterm-rows'));
        return { width: box.width, height: box.height, font: rows.fontSize, space: rows.whiteSpace };
    }""")
    assert looks["width"] > 800 and looks["height"] > 200, looks
    assert looks["font"] == "13px" and looks["space"] == "pre", looks
    # Typed with the keyboard into the focused terminal. Half a line, then a
    # live redraw (the instance changed), then the rest: the redraw keeps
    # the terminal and its focus, as a person typing while the page updates
    # needs. Only the shell can turn $((40+2)) into 42.
    console.get_by_test_id("console-output").click()
    page.keyboard.type("echo hi-")
    page.evaluate("document.querySelector('[data-testid=instance]').dataset.drawn = 'before'")
    cli(state, "instance", "update", "ui-sh", "--label", "typed=yes")
    expect(page.locator("[data-testid=instance]:not([data-drawn])")).to_be_visible()
    page.keyboard.type("$((40+2))")
    expect(rows).to_contain_text("echo hi-$((40+2))")
    page.keyboard.press("Enter")
    # The answer goes through the shim's copy into the log the console
    # follows: seconds on a loaded 2-core machine (once over 5 s).
    expect(rows).to_contain_text("hi-42", timeout=ACTION_TIMEOUT_MS)
    shot(page, "console")
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    expect(console.get_by_test_id("console-state")).to_have_text("closed", timeout=ACTION_TIMEOUT_MS)
    wait_for(lambda: instances(state)["ui-sh"]["status"] == "stopped", "ui-sh to stop after exit")


def delete_from_the_page(page, url, state):
    page.goto(f"{url}#/instances/ui-web")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("instance").locator("[data-action=delete]").click()
    expect(page.locator("#notice")).to_contain_text("delete: ui-web done", timeout=ACTION_TIMEOUT_MS)
    wait_for(lambda: "ui-web" not in instances(state), "ui-web to be gone")


def templates_and_operations(page, url, state):
    """A template made with the CLI, and the instance made from it, show
    in the Templates view; the create shows in the Operations view, and
    the instance's page links to its own operations."""
    spec = Path(state) / "web.yaml"
    spec.write_text("name: web\nspec:\n  type: container\n  image: busybox\n"
                    "  cpus: 0.1\n  memory_mib: 32\n  command: [sleep, '600']\n")
    cli(state, "template", "create", "web", "-f", str(spec))
    cli(state, "instance", "create", "--template", "web@1", "--name", "from-template")
    page.goto(f"{url}#/templates")
    row = page.locator('[data-testid=templates] tr[data-template="web"][data-version="1"]')
    expect(row).to_contain_text("busybox")
    expect(row.get_by_role("link", name="from-template")).to_be_visible()
    shot(page, "templates")
    page.goto(f"{url}#/operations")
    created = page.locator('[data-testid=operations] tr[data-kind="create"]', has_text="from-template")
    expect(created.locator("[data-status=succeeded]")).to_be_visible()
    page.goto(f"{url}#/instances/from-template")
    page.get_by_role("link", name="its long calls").click()
    operations = page.get_by_test_id("operations")
    expect(operations).to_contain_text("on from-template")
    rows = operations.locator("tbody tr")
    expect(rows.first).to_be_visible()
    for target in rows.locator("td:nth-child(2)").all_inner_texts():
        assert target == "from-template", f"another target listed: {target}"
    shot(page, "operations")


def images_page(page, url, state):
    """The busybox image the test imported, as the Images page lists it:
    its size and digest as the CLI reports them, on the one node."""
    listed = {i["name"]: i for i in json.loads(cli(state, "image", "list", "-o", "json"))}
    busybox = next(i for name, i in listed.items() if "busybox" in name)
    node = json.loads(cli(state, "node", "list", "-o", "json"))[0]
    page.goto(f"{url}#/images")
    row = page.locator(f'[data-testid=image-table] tr[data-image="{busybox["name"]}"]')
    expect(row).to_contain_text("container")
    expect(row).to_contain_text(busybox["digest"][:19])
    expect(row.get_by_role("link", name=node["hostname"])).to_be_visible()
    expect(page.locator("nav a.current")).to_have_text("Images")
    shot(page, "images")


def snapshots_of_a_microvm(page, url, state):
    """A running microVM on zixiao-vmm: its terminal shows what the guest
    prints, keys going raw; a snapshot taken with the CLI shows in its
    page, one taken with the page's button shows in the CLI, a bad name is
    refused, naming the field, taking nothing, and the page deletes one."""
    if not VMM_GUEST:
        if RUNTIMES_REQUIRED:
            raise AssertionError("ZIXIAO_VMM_TEST_GUEST is not set (zixiao-vmm's test guest)")
        print("skip snapshots: no zixiao-vmm test guest", flush=True)
        return
    cli(state, "instance", "create", "--name", "ui-vm", "--type", "microvm", "--backend", "vmm",
        "--kernel", VMM_GUEST, "--cmdline", "console=ttyS0 zx.mode=loop", "--memory", "64")
    cli(state, "instance", "snapshot", "create", "ui-vm", "from-cli")
    page.goto(f"{url}#/instances/ui-vm")
    console = page.get_by_test_id("console")
    expect(console).to_have_attribute("data-console-mode", "raw")
    console.locator("[data-action=console]").click()
    expect(console.get_by_test_id("console-state")).to_have_text("connected")
    expect(console.locator(".xterm-rows")).to_contain_text("ZX: count=", timeout=ACTION_TIMEOUT_MS)
    panel = page.get_by_test_id("snapshots")
    expect(panel.locator('tr[data-snapshot="from-cli"]')).to_contain_text("disks and memory")
    panel.locator("input[name=name]").fill("from-page")
    panel.get_by_role("button", name="Snapshot now").click()
    expect(page.locator("#notice")).to_contain_text("snapshot from-page of ui-vm taken",
                                                    timeout=ACTION_TIMEOUT_MS)
    expect(panel.locator('tr[data-snapshot="from-page"]')).to_be_visible()
    listed = json.loads(cli(state, "instance", "snapshot", "list", "ui-vm", "-o", "json"))
    assert [s["name"] for s in listed] == ["from-cli", "from-page"], listed
    shot(page, "snapshots")
    panel.locator("input[name=name]").fill("../up")
    panel.get_by_role("button", name="Snapshot now").click()
    expect(page.locator("#notice")).to_contain_text("invalid_argument: invalid snapshot")
    listed = json.loads(cli(state, "instance", "snapshot", "list", "ui-vm", "-o", "json"))
    assert len(listed) == 2, listed
    page.once("dialog", lambda dialog: dialog.accept())
    panel.locator('tr[data-snapshot="from-page"] [data-action=delete-snapshot]').click()
    expect(page.locator("#notice")).to_contain_text("snapshot from-page of ui-vm deleted",
                                                    timeout=ACTION_TIMEOUT_MS)
    expect(panel.locator('tr[data-snapshot="from-page"]')).to_have_count(0)
    expect(panel.locator('tr[data-snapshot="from-cli"]')).to_be_visible()
    listed = json.loads(cli(state, "instance", "snapshot", "list", "ui-vm", "-o", "json"))
    assert [s["name"] for s in listed] == ["from-cli"], listed
    # A container's runtime takes none: the panel says so instead of a list.
    page.goto(f"{url}#/instances/from-template")
    expect(page.get_by_test_id("snapshots-unsupported")).to_be_visible()


def dark_theme(browser, url):
    backgrounds = {}
    for scheme in ["light", "dark"]:
        page = browser.new_page(color_scheme=scheme, viewport={"width": 1280, "height": 800})
        page.goto(url)
        expect(page.get_by_test_id("overview")).to_be_visible()
        backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        if scheme == "dark":
            shot(page, "overview-dark")
        page.close()
    assert backgrounds["light"] != backgrounds["dark"], backgrounds


def sign_in_to_a_secure_server(browser):
    """A TLS server's dashboard asks for a token: a wrong one is refused
    with the API's reason, the admin's opens the overview."""
    with tempfile.TemporaryDirectory(prefix="zixiao-ui-secure-") as state:
        server, line = started(state, "server", "--embedded", "--listen", "127.0.0.1:0",
                               "--ui-listen", "127.0.0.1:0", marker=" dashboard on ")
        try:
            url = line.split(" dashboard on ", 1)[1]
            admin = (Path(state) / "pki" / "admin.yaml").read_text()
            token = next(l.split(":", 1)[1].strip().strip('"') for l in admin.splitlines()
                         if l.strip().startswith("token:"))
            assert url.startswith("https://"), url
            # The page is HTTPS with a certificate of the cluster's own CA,
            # which this throwaway browser profile does not hold (the CLI's
            # dashboard test checks the chain against it with curl).
            context = browser.new_context(ignore_https_errors=True,
                                          viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(url)
            dialog = page.locator("dialog#login")
            expect(dialog).to_be_visible()
            shot(page, "sign-in")
            page.locator("#token").fill("zx_not_a_token")
            page.get_by_role("button", name="Sign in").click()
            expect(dialog).to_be_visible()
            expect(page.locator("#login-error")).to_contain_text("unauthenticated")
            page.locator("#token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            expect(dialog).to_be_hidden()
            expect(page.get_by_test_id("nodes-total").locator(".n")).to_have_text("1")
            expect(page.locator("#live")).to_have_text("live")
            context.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


def explain_failure(page, state, step):
    """What a failing step leaves for whoever reads the CI log: a
    screenshot, the instances as the CLI sees them with their logs, and the
    server's log."""
    print(f"FAIL {step}; what the server saw follows", file=sys.stderr)
    try:
        shot(page, "failure")
        listed = cli(state, "instance", "list", "-o", "json")
        print(listed, file=sys.stderr)
        for i in json.loads(listed):
            log = cli(state, "instance", "logs", i["name"])
            print(f"log of {i['name']}: {log!r}", file=sys.stderr)
    except Exception as error:  # the diagnosis must not hide the failure
        print(f"(no instance list: {error})", file=sys.stderr)
    log = Path(state) / "server.log"
    if log.exists():
        lines = log.read_text(errors="replace").splitlines()
        print("\n".join(lines[-80:]), file=sys.stderr)


def main():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zixiao-ui-") as state:
        # No daemon runs for the directory: `zixiao ui` runs it, and the
        # CLI's commands below go through it.
        ui, line = started(state, "ui", "--listen", "127.0.0.1:0", marker="zixiao ui on",
                           env={"ZIXIAO_STATS_SAMPLE_MS": "500"})
        try:
            cli(state, "image", "import", BUSYBOX)
            node = json.loads(cli(state, "node", "list", "-o", "json"))[0]
            url = line.split(" on ", 1)[1]  # http://127.0.0.1:PORT/
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(15_000)
                errors = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                steps = [
                    ("the overview shows the real node and counts", lambda: check_overview(page, url, node)),
                    ("a container created from the page runs", lambda: create_from_the_page(page, url, state)),
                    ("a bad name is refused, naming the field", lambda: bad_create_is_refused(page, url, state)),
                    ("the filter and the live list", lambda: filter_and_live_list(page, url, state)),
                    ("charts of the usage history", lambda: usage_charts(page, url, state)),
                    ("charts of a node's usage", lambda: node_usage_charts(page, url, state)),
                    ("a stop from the page stops it", lambda: stop_from_the_page(page, url, state)),
                    ("a delete from the page deletes it", lambda: delete_from_the_page(page, url, state)),
                    ("the console types into a shell", lambda: console_in_the_page(page, url, state)),
                    ("templates and operations", lambda: templates_and_operations(page, url, state)),
                    ("the images page lists the imported image", lambda: images_page(page, url, state)),
                    ("a microVM's console and snapshots", lambda: snapshots_of_a_microvm(page, url, state)),
                    ("light and dark themes", lambda: dark_theme(browser, url)),
                    ("a TLS server's dashboard signs in with a token", lambda: sign_in_to_a_secure_server(browser)),
                ]
                for name, step in steps:
                    began = time.monotonic()
                    try:
                        step()
                    except Exception:
                        explain_failure(page, state, name)
                        raise
                    print(f"ok   {name} ({time.monotonic() - began:.1f} s)", flush=True)
                assert not errors, f"script errors in the page: {errors}"
                browser.close()
        finally:
            for name in list(instances(state)):
                cli(state, "instance", "delete", name)
            ui.terminate()
            ui.wait(timeout=30)
    print(f"screenshots in {SHOTS}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"FAIL {error}", file=sys.stderr)
        sys.exit(1)
