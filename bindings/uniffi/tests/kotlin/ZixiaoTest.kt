// The uniffi bindings' suite, through the generated Kotlin (io.zixiao) and
// JNA, against the real embedded deployment of `open(stateDir)`:
// errors cross with their kind, nodes (labels, traits and aggregates),
// networks (the JVM runs in a network
// namespace of its own, so the bridge it sets up vanishes with it), and a
// container on containerd (when ZIXIAO_CONTAINERD_SOCKET is set) and its
// clone, through
// the blocking Controller and the suspend functions of AsyncController.
//
// Usage: ZixiaoTestKt <state dir> <another state dir>; prints
// "N passed, N failed" and exits non-zero when a test failed.

import io.zixiao.*
import kotlinx.coroutines.runBlocking

private var passed = 0
private var failed = 0

private fun test(name: String, body: () -> Unit) {
    try {
        body()
        passed++
        println("ok - $name")
    } catch (e: Throwable) {
        failed++
        println("FAIL - $name: $e")
        e.printStackTrace(System.out)
    }
}

private fun skip(name: String, reason: String) {
    if (System.getenv("ZIXIAO_REQUIRE_RUNTIMES") == "1") {
        failed++
        println("FAIL - $name: $reason")
    } else {
        println("skip - $name: $reason")
    }
}

private inline fun <reified E : Throwable> raises(call: () -> Unit): E {
    try {
        call()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e", e)
    }
    throw AssertionError("expected ${E::class.simpleName}, nothing was raised")
}

private fun container(name: String, command: List<String>, memoryMib: ULong = 32uL) = CreateInstance(
    name = name,
    spec = InstanceSpec(
        instanceType = InstanceType.CONTAINER,
        cpuMillis = 1000u,
        memoryMib = memoryMib,
        image = "busybox",
        command = command,
        env = mapOf(),
    ),
    labels = mapOf(),
)

private fun eventually(what: String, timeoutMs: Long = 60_000, check: () -> Boolean) {
    val deadline = System.currentTimeMillis() + timeoutMs
    while (!check()) {
        check(System.currentTimeMillis() < deadline) { "timed out waiting for $what" }
        Thread.sleep(50)
    }
}

fun main(args: Array<String>) {
    val controller = open(args[0])

    test("an invalid field is InvalidArgument naming it; a missing one NotFound") {
        val invalid = raises<ZixiaoException.InvalidArgument> {
            controller.createInstance(container("tiny", listOf("true"), memoryMib = 1uL), true)
        }
        check(invalid.field == "spec.memory_mib") { "field ${invalid.field}" }
        check(invalid.detail.contains("spec.memory_mib")) { invalid.detail }
        val missing = raises<ZixiaoException.NotFound> { controller.getInstance("ghost") }
        check(missing.detail.contains("ghost")) { missing.detail }
        check(controller.listInstances(InstanceFilter(labels = mapOf())).isEmpty())
    }

    test("a server nobody answers for is Unavailable on the first call, naming it") {
        val remote = connect("http://127.0.0.1:7400")
        val e = raises<ZixiaoException.Unavailable> { remote.listNodes() }
        check(e.detail.contains("127.0.0.1:7400")) { e.detail }
    }

    test("this machine is the one node") {
        val nodes = controller.listNodes()
        check(nodes.size == 1) { "$nodes" }
        check(nodes[0].status == NodeStatus.READY)
        check(nodes[0].capacity.cpuMillis >= 1000u)
    }

    test("networks: create, get, list, an overlap named, delete") {
        val lan = controller.createNetwork(CreateNetwork(name = "lan", subnets = listOf("10.77.0.0/24")))
        check(lan.subnets.single().gateway == "10.77.0.1") { "$lan" }
        check(lan.nat && lan.isolated)
        check(controller.getNetwork("lan") == lan)
        val overlap = raises<ZixiaoException.InvalidArgument> {
            controller.createNetwork(CreateNetwork(name = "wide", subnets = listOf("10.77.0.0/16")))
        }
        check(overlap.field == "subnets[0]") { overlap.field }
        check(controller.listNetworks().map { it.name } == listOf("lan"))
        controller.deleteNetwork("lan")
        check(controller.listNetworks().isEmpty())
        raises<ZixiaoException.NotFound> { controller.getNetwork("lan") }
    }

    val archive = System.getenv("ZIXIAO_TEST_BUSYBOX_OCI")
    val containerName = "a container runs, logs, is measured, stopped and deleted (containerd)"
    if (System.getenv("ZIXIAO_CONTAINERD_SOCKET").isNullOrEmpty() || archive.isNullOrEmpty()) {
        skip(containerName, "ZIXIAO_CONTAINERD_SOCKET and ZIXIAO_TEST_BUSYBOX_OCI are not set")
    } else test(containerName) {
        val images = controller.importImages(archive, InstanceType.CONTAINER)
        check(images.any { it.name.contains("busybox") }) { "$images" }
        check(controller.listImages(InstanceType.CONTAINER).any { it.name.contains("busybox") })
        val named = controller.importImages(archive, InstanceType.CONTAINER, "localhost/kotlin/box:v1")
        check(named.map { it.name } == listOf("localhost/kotlin/box:v1")) { "$named" }
        val badName = raises<ZixiaoException.InvalidArgument> {
            controller.importImages(archive, InstanceType.CONTAINER, "Not A Name")
        }
        check(badName.field.startsWith("name")) { badName.field }

        controller.createInstance(container("hello", listOf("echo", "hi")), true)
        eventually("hello's output") { controller.readLog("hello", 0uL, 4096uL).data.decodeToString() == "hi\n" }
        eventually("hello to exit") { controller.getInstance("hello").status == InstanceStatus.STOPPED }
        check(controller.getInstance("hello").exitCode == 0)

        val sleeper = controller.createInstance(container("sleeper", listOf("sleep", "600")), true)
        check(sleeper.status == InstanceStatus.RUNNING) { "$sleeper" }
        val stats = controller.instanceStats("sleeper")
        check(stats.memoryLimitBytes == 32uL * 1024uL * 1024uL) { "$stats" }
        // Only a server keeps a history; this deployment has no daemon.
        val noHistory = raises<ZixiaoException.Unsupported> { controller.instanceStatsHistory("sleeper") }
        check(noHistory.detail.contains("a server keeps one")) { noHistory.detail }
        raises<ZixiaoException.NotFound> { controller.instanceStatsHistory("ghost") }
        val localNode = controller.listNodes().first().id
        raises<ZixiaoException.Unsupported> { controller.nodeStatsHistory(localNode) }
        raises<ZixiaoException.NotFound> { controller.nodeStatsHistory("no-such-node") }
        check(controller.stopInstance("sleeper", true).status == InstanceStatus.STOPPED)
        check(controller.startInstance("sleeper", true).status == InstanceStatus.RUNNING)
        val running = controller.listInstances(InstanceFilter(status = InstanceStatus.RUNNING, labels = mapOf()))
        check(running.map { it.name } == listOf("sleeper")) { "$running" }

        // A live resize and a label, seen in the cgroup and on the instance.
        val resized = controller.updateInstance(
            "sleeper",
            InstanceUpdate(setLabels = mapOf("tier" to "web"), memoryMib = 48uL, restart = RestartPolicy.ALWAYS),
            true,
        )
        check(resized.labels["tier"] == "web" && resized.spec.memoryMib == 48uL) { "$resized" }
        check(controller.instanceStats("sleeper").memoryLimitBytes == 48uL * 1024uL * 1024uL)
        val tooSmall = raises<ZixiaoException.InvalidArgument> {
            controller.updateInstance("sleeper", InstanceUpdate(setLabels = mapOf(), memoryMib = 1uL), true)
        }
        check(tooSmall.field.contains("memory_mib")) { tooSmall.field }

        // Pages of one: every instance once, in name order, then no token.
        val seen = mutableListOf<String>()
        var token: String? = null
        do {
            val page = controller.listInstancesPage(InstanceFilter(labels = mapOf()), 1u, token)
            check(page.instances.size <= 1) { "$page" }
            seen += page.instances.map { it.name }
            token = page.nextPageToken
        } while (token != null)
        check(seen == listOf("hello", "sleeper")) { "$seen" }
        val badToken = raises<ZixiaoException.InvalidArgument> {
            controller.listInstancesPage(InstanceFilter(labels = mapOf()), 1u, "not a token")
        }
        check(badToken.field == "page_token") { badToken.field }
        // Templates: a version, an instance from it with a change, its count.
        val web = controller.createTemplate(
            "web",
            TemplateSpec(labels = mapOf("app" to "web"), spec = container("unused", listOf("sleep", "600")).spec),
        )
        check(web.versions.single().version == 1u) { "$web" }
        val fromTemplate = controller.createFromTemplate("tpl", "web@1", listOf("memory_mib=40"), true)
        check(fromTemplate.template == "web@1" && fromTemplate.spec.memoryMib == 40uL) { "$fromTemplate" }
        check(fromTemplate.labels["app"] == "web") { "$fromTemplate" }
        check(controller.getTemplate("web").versions.single().instances == listOf("tpl"))
        val inUse = raises<ZixiaoException.FailedPrecondition> { controller.deleteTemplate("web", 1u) }
        check(inUse.detail.contains("tpl")) { inUse.detail }
        val unknownField = raises<ZixiaoException.InvalidArgument> {
            controller.createFromTemplate("bad", "web", listOf("colour=red"), true)
        }
        check(unknownField.field.startsWith("set")) { unknownField.field }

        for (name in listOf("hello", "sleeper", "tpl")) {
            check(controller.deleteInstance(name, true) == null)
        }
        // With the CPUs free again: a trait and an aggregate declared on the
        // node place the instance that waited for them.
        val node = controller.listNodes().single().id
        val asks = container("picky", listOf("sleep", "600"))
        val picky = controller.createInstance(
            asks.copy(spec = asks.spec.copy(requiredTraits = listOf("ssd"), aggregates = listOf("fast"))),
            true,
        )
        check(picky.status == InstanceStatus.PENDING) { "$picky" }
        check(controller.labelNode(node, listOf("disk=ssd")).operator.labels["disk"] == "ssd")
        check(controller.addNodeTraits(node, listOf("ssd")).traits.contains("ssd"))
        val fast = controller.createAggregate("fast", mapOf("tier" to "gold"))
        check(fast.metadata == mapOf("tier" to "gold") && fast.nodes.isEmpty()) { "$fast" }
        check(controller.addAggregateNode("fast", node).nodes == listOf(node))
        val placed = controller.getInstance("picky")
        check(placed.status == InstanceStatus.RUNNING && placed.node == node) { "$placed" }
        check(controller.listAggregates().map { it.name } == listOf("fast"))
        val used = raises<ZixiaoException.FailedPrecondition> { controller.deleteAggregate("fast") }
        check(used.detail.contains(node)) { used.detail }
        val badLabel = raises<ZixiaoException.InvalidArgument> { controller.labelNode(node, listOf("no-equals")) }
        check(badLabel.field == "labels") { badLabel.field }
        raises<ZixiaoException.NotFound> { controller.getAggregate("slow") }

        check(controller.deleteInstance("picky", true) == null)
        check(controller.removeAggregateNode("fast", node).nodes.isEmpty())
        controller.deleteAggregate("fast")
        controller.removeNodeTraits(node, listOf("ssd"))
        check(controller.labelNode(node, listOf("disk-")).operator.labels.isEmpty())
        controller.deleteTemplate("web")
        check(controller.listTemplates().isEmpty())

        // A clone of a running container: its own instance, running the
        // source's command (its log says so); a taken name or a bad
        // snapshot name is refused and stores nothing.
        val echo = controller.createInstance(container("echo", listOf("sh", "-c", "echo same-command; sleep 600")), true)
        check(echo.status == InstanceStatus.RUNNING) { "$echo" }
        val twin = controller.cloneInstance("echo", "twin", false, null, true)
        check(twin.status == InstanceStatus.RUNNING) { "$twin" }
        check(twin.cloneOf == echo.id && twin.id != echo.id) { "$twin" }
        check(twin.spec.command == echo.spec.command) { "$twin" }
        eventually("twin's output") { controller.readLog("twin", 0uL, 4096uL).data.decodeToString() == "same-command\n" }
        val taken = raises<ZixiaoException.AlreadyExists> { controller.cloneInstance("echo", "twin") }
        check(taken.detail.contains("twin")) { taken.detail }
        val badSnapshot = raises<ZixiaoException.InvalidArgument> {
            controller.cloneInstance("echo", "twin2", snapshot = "no such/name")
        }
        check(badSnapshot.field == "snapshot") { badSnapshot.field }
        val names = controller.listInstances(InstanceFilter(labels = mapOf())).map { it.name }
        check(names == listOf("echo", "twin")) { "$names" }
        for (name in listOf("twin", "echo")) {
            check(controller.deleteInstance(name, true) == null)
        }
        check(controller.listInstances(InstanceFilter(labels = mapOf())).isEmpty())
    }

    // The pull itself is tested by the Python and Node suites: in this
    // JVM's network namespace no registry answers.
    test("a bad pull is InvalidArgument naming the field, before any registry is asked") {
        val badTag = raises<ZixiaoException.InvalidArgument> {
            controller.pullImage("127.0.0.1:25000/busybox:.bad", InstanceType.CONTAINER)
        }
        check(badTag.field.contains("tag")) { badTag.field }
        val noPassword = raises<ZixiaoException.InvalidArgument> {
            controller.pullImage("127.0.0.1:25000/busybox:1", InstanceType.CONTAINER, "alice")
        }
        check(noPassword.field == "password") { noPassword.field }
    }

    test("the suspend functions of AsyncController") {
        runBlocking {
            val other = openAsync(args[1])
            check(other.listNodes().single().status == NodeStatus.READY)
            raises<ZixiaoException.NotFound> { runBlocking { other.getInstance("ghost") } }
            val noSource = raises<ZixiaoException.NotFound> { runBlocking { other.cloneInstance("ghost", "twin") } }
            check(noSource.detail.contains("ghost")) { noSource.detail }
            val dmz = other.createNetwork(CreateNetwork(name = "dmz", subnets = listOf("10.78.0.0/24")))
            check(other.listNetworks() == listOf(dmz))
            other.deleteNetwork("dmz")
            check(other.listNetworks().isEmpty())
            val remote = runBlocking { connectAsync("http://127.0.0.1:7400") }
            raises<ZixiaoException.Unavailable> { runBlocking { remote.listNodes() } }
        }
    }

    println("$passed passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
