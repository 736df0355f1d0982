// Prints ZooKeeper's own encoding of sample records, one "name hex" line each, for
// server/tests/zk_jute_golden.rs to compare quorumkv's codec against.

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import org.apache.jute.Record;
import org.apache.zookeeper.data.ACL;
import org.apache.zookeeper.data.ClientInfo;
import org.apache.zookeeper.data.Id;
import org.apache.zookeeper.data.Stat;
import org.apache.zookeeper.proto.*;

public class JuteGolden {
    static void print(String name, Record r) throws Exception {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        r.serialize(new org.apache.jute.BinaryOutputArchive(out), "");
        out.flush();
        StringBuilder hex = new StringBuilder();
        for (byte b : bytes.toByteArray()) {
            hex.append(String.format("%02x", b));
        }
        System.out.println(name + " " + hex);
    }

    public static void main(String[] args) throws Exception {
        Stat stat = new Stat(1L, 2L, 1700000000000L, 1700000000001L, 3, 4, 5, 0x0100000000000007L, 6, 2, 9L);
        List<ACL> acl = Arrays.asList(
            new ACL(31, new Id("world", "anyone")),
            new ACL(1, new Id("digest", "user:HASH=")));
        print("stat", stat);
        print("connect_request", new ConnectRequest(0, 42L, 10000, 0L, new byte[16]));
        print("connect_response", new ConnectResponse(0, 10000, 0x0100000000000001L, new byte[] {1, 2, 3}));
        print("request_header", new RequestHeader(7, 1));
        print("reply_header", new ReplyHeader(-1, -1L, -101));
        print("create_request", new CreateRequest("/app/lock-", "me".getBytes("UTF-8"), acl, 3));
        print("create_ttl_request", new CreateTTLRequest("/ttl", new byte[0], acl, 5, 60000L));
        print("create2_response", new Create2Response("/app/lock-0000000001", stat));
        print("set_data_request", new SetDataRequest("/a", new byte[] {0, (byte) 255}, -1));
        print("set_data_request_null", new SetDataRequest("/a", null, 2));
        print("get_data_response", new GetDataResponse("v".getBytes("UTF-8"), stat));
        print("get_children2_response", new GetChildren2Response(Arrays.asList("b", "a"), stat));
        print("empty_children", new GetChildrenResponse(Collections.emptyList()));
        print("watcher_event", new WatcherEvent(4, 3, "/app"));
        print("multi_header", new MultiHeader(-1, true, -1));
        print("auth_packet", new AuthPacket(0, "digest", "user:pw".getBytes("UTF-8")));
        print("set_watches2", new SetWatches2(17L, Arrays.asList("/d"), Arrays.asList("/e"),
            Arrays.asList("/c"), Arrays.asList("/p"), Collections.emptyList()));
        print("set_acl_request", new SetACLRequest("/a", acl, 2));
        print("get_acl_response", new GetACLResponse(acl, stat));
        print("error_response", new ErrorResponse(-110));
        print("who_am_i_response", new WhoAmIResponse(Arrays.asList(new ClientInfo("ip", "127.0.0.1"))));
        print("add_watch_request", new AddWatchRequest("/r", 1));
        print("remove_watches_request", new RemoveWatchesRequest("/r", 3));
        print("reconfig_request", new ReconfigRequest("", "", "server.1=h:1:2", -1L));
    }
}
