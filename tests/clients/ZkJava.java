// ZooKeeper's own Java client (Debian's zookeeper 3.8 jar) against a quorumkv member's
// ZooKeeper port: what kazoo does not send. multi and its failure shape, multiRead,
// getEphemerals, getAllChildrenNumber, persistent and recursive watches, removeWatches and
// checkWatches, containers and TTL nodes reaped, ACLs with digest auth, the super-user, and
// getACL's masking. Usage: java ZkJava HOST:PORT; prints "ok" last.

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.apache.zookeeper.AddWatchMode;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.ACL;
import org.apache.zookeeper.data.Id;
import org.apache.zookeeper.data.Stat;

public class ZkJava {
    static String hosts;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static ZooKeeper connect() throws Exception {
        CountDownLatch up = new CountDownLatch(1);
        ZooKeeper zk = new ZooKeeper(hosts, 10000, e -> {
            if (e.getState() == Watcher.Event.KeeperState.SyncConnected) {
                up.countDown();
            }
        });
        check(up.await(15, TimeUnit.SECONDS), "connected");
        return zk;
    }

    interface Call {
        void run() throws Exception;
    }

    static void expect(KeeperException.Code code, Call call) throws Exception {
        try {
            call.run();
        } catch (KeeperException e) {
            check(e.code() == code, "expected " + code + ", got " + e.code());
            return;
        }
        throw new AssertionError("expected " + code + ", got success");
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        hosts = args[0];
        ZooKeeper zk = connect();
        String root = "/java-check";
        zk.create(root, b("r"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);

        // multi: all in one zxid.
        List<OpResult> done = zk.multi(Arrays.asList(
                Op.check(root, 0),
                Op.create(root + "/a", b("1"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                Op.create(root + "/b", b("2"), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                Op.setData(root + "/a", b("11"), 0)));
        check(done.size() == 4, "four results");
        Stat a = zk.exists(root + "/a", false);
        Stat bStat = zk.exists(root + "/b", false);
        check(a.getCzxid() == bStat.getCzxid() && a.getMzxid() == a.getCzxid(), "one zxid");
        check(a.getVersion() == 1, "set inside the multi");
        // A failing multi: nothing applied; results say where.
        try {
            zk.multi(Arrays.asList(
                    Op.create(root + "/c", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                    Op.delete(root + "/missing", -1),
                    Op.create(root + "/d", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)));
            throw new AssertionError("the multi succeeded");
        } catch (KeeperException e) {
            check(e.code() == KeeperException.Code.NONODE, "multi failed with " + e.code());
            List<OpResult> r = e.getResults();
            int[] errs = new int[r.size()];
            for (int i = 0; i < r.size(); i++) {
                errs[i] = ((OpResult.ErrorResult) r.get(i)).getErr();
            }
            check(Arrays.equals(errs, new int[] {0, -101, -2}), "per-op errors " + Arrays.toString(errs));
        }
        check(zk.exists(root + "/c", false) == null, "nothing of a failed multi applied");

        // multiRead: each read answered on its own.
        List<OpResult> reads = zk.multi(Arrays.asList(
                Op.getData(root + "/a"), Op.getChildren(root), Op.getData(root + "/nope")));
        check(Arrays.equals(((OpResult.GetDataResult) reads.get(0)).getData(), b("11")), "read data");
        List<String> kids = new ArrayList<>(((OpResult.GetChildrenResult) reads.get(1)).getChildren());
        Collections.sort(kids);
        check(kids.equals(Arrays.asList("a", "b")), "read children " + kids);
        check(((OpResult.ErrorResult) reads.get(2)).getErr() == -101, "a missing node's read");

        // getEphemerals and getAllChildrenNumber.
        zk.create(root + "/a/e1", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        zk.create(root + "/b/e2", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        check(zk.getEphemerals(root + "/a").equals(Arrays.asList(root + "/a/e1")), "ephemerals by prefix");
        check(zk.getEphemerals().size() == 2, "all ephemerals");
        check(zk.getAllChildrenNumber(root) == 4, "descendants " + zk.getAllChildrenNumber(root));

        // Persistent and recursive watches: they stay.
        LinkedBlockingQueue<String> heard = new LinkedBlockingQueue<>();
        Watcher recorder = e -> heard.add(e.getType() + " " + e.getPath());
        zk.addWatch(root + "/a", recorder, AddWatchMode.PERSISTENT_RECURSIVE);
        zk.setData(root + "/a/e1", b("x"), -1);
        zk.setData(root + "/a/e1", b("y"), -1);
        zk.create(root + "/a/deep", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        for (String want : new String[] {
                "NodeDataChanged " + root + "/a/e1",
                "NodeDataChanged " + root + "/a/e1",
                "NodeCreated " + root + "/a/deep"}) {
            String got = heard.poll(10, TimeUnit.SECONDS);
            check(want.equals(got), "recursive: wanted " + want + ", heard " + got);
        }
        // removeWatches: the server forgets it; a change then goes unheard.
        zk.removeWatches(root + "/a", recorder, Watcher.WatcherType.Any, false);
        zk.setData(root + "/a/deep", b("z"), -1);
        String after = heard.poll(500, TimeUnit.MILLISECONDS);
        check(after == null || after.contains("WatchRemoved"), "heard after removal: " + after);
        expect(KeeperException.Code.NOWATCHER,
                () -> zk.removeAllWatches(root + "/nowhere", Watcher.WatcherType.Any, false));
        zk.addWatch(root + "/b", recorder, AddWatchMode.PERSISTENT);
        zk.create(root + "/b/kid", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        String child = heard.poll(10, TimeUnit.SECONDS);
        check(("NodeChildrenChanged " + root + "/b").equals(child), "persistent: " + child);
        zk.removeAllWatches(root + "/b", Watcher.WatcherType.Any, false);

        // Containers go once emptied; TTL nodes once expired (the member reaps every 200 ms).
        zk.create(root + "/box", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.CONTAINER);
        zk.create(root + "/box/item", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Thread.sleep(600);
        check(zk.exists(root + "/box", false) != null, "a container with a child stays");
        zk.delete(root + "/box/item", -1);
        zk.create(root + "/ttl", b(""), ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_WITH_TTL,
                new Stat(), 300);
        long deadline = System.currentTimeMillis() + 15000;
        while (zk.exists(root + "/box", false) != null || zk.exists(root + "/ttl", false) != null) {
            check(System.currentTimeMillis() < deadline, "never reaped");
            Thread.sleep(100);
        }

        // ACLs: a digest-protected node, refused to others, open to its owner and the super-user.
        ZooKeeper owner = connect();
        owner.addAuthInfo("digest", b("alice:secret"));
        owner.create(root + "/private", b("p"), ZooDefs.Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT);
        List<ACL> stored = owner.getACL(root + "/private", new Stat());
        check(stored.size() == 1 && stored.get(0).getId().getScheme().equals("digest")
                && stored.get(0).getId().getId().startsWith("alice:"), "auth became digest " + stored);
        expect(KeeperException.Code.NOAUTH, () -> zk.getData(root + "/private", false, null));
        expect(KeeperException.Code.NOAUTH, () -> zk.setData(root + "/private", b("x"), -1));
        expect(KeeperException.Code.NOAUTH, () -> zk.getACL(root + "/private", new Stat()));
        expect(KeeperException.Code.NOAUTH, () -> zk.create(root + "/private/c", b(""),
                ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        check(zk.exists(root + "/private", false) != null, "exists needs no permission");
        expect(KeeperException.Code.INVALIDACL, () -> zk.create(root + "/mine", b(""),
                ZooDefs.Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT));
        // Admin without read: the ACL is shown with the digest hidden.
        owner.setACL(root + "/private", Arrays.asList(
                new ACL(ZooDefs.Perms.ADMIN, new Id("world", "anyone")),
                new ACL(ZooDefs.Perms.ALL, new Id("digest", "alice:hash"))), -1);
        List<ACL> shown = zk.getACL(root + "/private", new Stat());
        check(shown.get(1).getId().getId().equals("alice:x"), "masked " + shown);
        ZooKeeper admin = connect();
        admin.addAuthInfo("digest", b("super:test"));
        check(Arrays.equals(admin.getData(root + "/private", false, null), b("p")), "super reads");
        admin.delete(root + "/private", -1);

        // Closing the session removes its ephemerals.
        zk.close();
        check(owner.getEphemerals().isEmpty(), "the owner made none");
        check(owner.exists(root + "/a/e1", false) == null, "ephemerals gone with their session");
        owner.close();
        admin.close();
        System.out.println("ok");
    }
}
