// Apache Curator's recipes against quorumkv members' ZooKeeper ports.
//
// Usage: java CuratorRecipes HOST:PORT,HOST:PORT,...
// Runs, printing one line per recipe that holds:
//   a LeaderLatch of three participants (one leader; another once it leaves),
//   an InterProcessMutex guarding a read-modify-write counter from eight threads,
//   containers created by creatingParentContainersIfNeeded and reaped once emptied,
//   a CuratorCache over a subtree (persistent recursive watches), which must stay equal to the
//   tree across the loss of its member: it prints "connected PORT", reads a line naming the
//   members still alive once that member is killed, writes through them, and checks the cache.
// Prints "ok" last; exits non-zero at the first recipe that does not hold.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.cache.ChildData;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.RetryNTimes;

public class CuratorRecipes {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.out.println("FAILED: " + what);
            System.out.flush();
            System.exit(1);
        }
    }

    static CuratorFramework client(String hosts) throws Exception {
        CuratorFramework c = CuratorFrameworkFactory.newClient(
            hosts, 15000, 5000, new RetryNTimes(50, 200));
        c.start();
        check(c.blockUntilConnected(20, TimeUnit.SECONDS), "connected to " + hosts);
        return c;
    }

    static void waitFor(String what, long ms, java.util.function.BooleanSupplier cond)
            throws Exception {
        long end = System.currentTimeMillis() + ms;
        while (!cond.getAsBoolean()) {
            check(System.currentTimeMillis() < end, what);
            Thread.sleep(50);
        }
    }

    static void latch(String hosts) throws Exception {
        List<CuratorFramework> clients = new ArrayList<>();
        List<LeaderLatch> latches = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            CuratorFramework c = client(hosts);
            LeaderLatch l = new LeaderLatch(c, "/recipes/latch", "p" + i);
            l.start();
            clients.add(c);
            latches.add(l);
        }
        waitFor("a leader", 15000, () -> latches.stream().filter(LeaderLatch::hasLeadership).count() == 1);
        Thread.sleep(300);
        check(latches.stream().filter(LeaderLatch::hasLeadership).count() == 1, "one leader");
        LeaderLatch first = latches.stream().filter(LeaderLatch::hasLeadership).findFirst().get();
        first.close();
        latches.remove(first);
        waitFor("a second leader", 15000, () -> latches.stream().filter(LeaderLatch::hasLeadership).count() == 1);
        for (LeaderLatch l : latches) {
            l.close();
        }
        for (CuratorFramework c : clients) {
            c.close();
        }
        System.out.println("latch ok");
    }

    static void mutex(String hosts) throws Exception {
        CuratorFramework a = client(hosts);
        CuratorFramework b = client(hosts);
        a.create().creatingParentsIfNeeded().forPath("/recipes/counter", "0".getBytes(StandardCharsets.UTF_8));
        AtomicInteger failures = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 8; t++) {
            CuratorFramework c = t % 2 == 0 ? a : b;
            Thread th = new Thread(() -> {
                InterProcessMutex m = new InterProcessMutex(c, "/recipes/mutex");
                try {
                    for (int i = 0; i < 10; i++) {
                        check(m.acquire(30, TimeUnit.SECONDS), "the lock");
                        try {
                            int n = Integer.parseInt(new String(c.getData().forPath("/recipes/counter"), StandardCharsets.UTF_8));
                            c.setData().forPath("/recipes/counter", Integer.toString(n + 1).getBytes(StandardCharsets.UTF_8));
                        } finally {
                            m.release();
                        }
                    }
                } catch (Exception e) {
                    e.printStackTrace();
                    failures.incrementAndGet();
                }
            });
            th.start();
            threads.add(th);
        }
        for (Thread th : threads) {
            th.join();
        }
        check(failures.get() == 0, "no thread failed");
        String n = new String(a.getData().forPath("/recipes/counter"), StandardCharsets.UTF_8);
        check(n.equals("80"), "80 increments under the lock, counted " + n);
        check(a.getChildren().forPath("/recipes/mutex").isEmpty(), "no lock node left");
        a.close();
        b.close();
        System.out.println("mutex ok");
    }

    static void containers(String hosts) throws Exception {
        CuratorFramework c = client(hosts);
        c.create().creatingParentContainersIfNeeded().forPath("/containers/a/b/leaf");
        check(c.checkExists().forPath("/containers/a/b") != null, "parents made");
        c.delete().forPath("/containers/a/b/leaf");
        waitFor("emptied containers reaped", 20000, () -> {
            try {
                return c.checkExists().forPath("/containers/a") == null;
            } catch (Exception e) {
                return false;
            }
        });
        c.close();
        System.out.println("containers ok");
    }

    static Map<String, String> cached(CuratorCache cache) {
        Map<String, String> m = new TreeMap<>();
        cache.stream().forEach((ChildData d) -> m.put(d.getPath(),
            d.getData() == null ? "" : new String(d.getData(), StandardCharsets.UTF_8)));
        return m;
    }

    static Map<String, String> tree(CuratorFramework c, String path) throws Exception {
        Map<String, String> m = new TreeMap<>();
        byte[] data = c.getData().forPath(path);
        m.put(path, data == null ? "" : new String(data, StandardCharsets.UTF_8));
        for (String child : c.getChildren().forPath(path)) {
            m.putAll(tree(c, path + "/" + child));
        }
        return m;
    }

    static void cache(String hosts) throws Exception {
        CuratorFramework c = client(hosts);
        c.create().creatingParentsIfNeeded().forPath("/cache/x", "1".getBytes(StandardCharsets.UTF_8));
        CuratorCache cache = CuratorCache.build(c, "/cache");
        cache.start();
        waitFor("the cache filled", 15000, () -> {
            try {
                return cached(cache).equals(tree(c, "/cache"));
            } catch (Exception e) {
                return false;
            }
        });
        Matcher port = Pattern.compile("remoteserver:[^ ]*:(\\d+)")
            .matcher(c.getZookeeperClient().getZooKeeper().toString());
        check(port.find(), "the connected member");
        System.out.println("connected " + port.group(1));
        System.out.flush();
        String alive = new BufferedReader(new InputStreamReader(System.in)).readLine();
        check(alive != null, "the members still alive");
        CuratorFramework w = client(alive);
        w.create().forPath("/cache/y", "2".getBytes(StandardCharsets.UTF_8));
        w.create().forPath("/cache/y/z", "3".getBytes(StandardCharsets.UTF_8));
        w.setData().forPath("/cache/x", "4".getBytes(StandardCharsets.UTF_8));
        w.delete().forPath("/cache/y/z");
        w.create().forPath("/cache/y/w", "5".getBytes(StandardCharsets.UTF_8));
        waitFor("the cache equal to the tree after the member's loss", 30000, () -> {
            try {
                return cached(cache).equals(tree(w, "/cache"));
            } catch (Exception e) {
                return false;
            }
        });
        Map<String, String> want = new TreeMap<>();
        want.put("/cache", "");
        want.put("/cache/x", "4");
        want.put("/cache/y", "2");
        want.put("/cache/y/w", "5");
        check(cached(cache).equals(want), "the cache holds " + cached(cache));
        cache.close();
        c.close();
        w.close();
        System.out.println("cache ok");
    }

    public static void main(String[] args) throws Exception {
        String hosts = args[0];
        latch(hosts);
        mutex(hosts);
        containers(hosts);
        cache(hosts);
        System.out.println("ok");
        System.exit(0);
    }
}
