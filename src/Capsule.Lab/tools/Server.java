// A small HTTP server on the JDK's own com.sun.net.httpserver, for migrating a JVM under load.
//
//   java Server.java PORT
//
// Answers GET /rr/N with the body "reply N\n" (so a client can check every answer), over HTTP/1.1
// keep-alive; prints "LISTENING PORT" once it accepts connections. Anything else is a 404.
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class Server {
    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(args[0]);
        // The response goes out as two writes (headers, body): with Nagle's algorithm on, the body waits for
        // the client's delayed ACK of the headers, 40 ms a request.
        System.setProperty("sun.net.httpserver.nodelay", "true");
        HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", port), 16);
        server.createContext("/rr/", Server::answer);
        server.start();
        System.out.println("LISTENING " + port);
        System.out.flush();
    }

    static void answer(HttpExchange ex) throws IOException {
        String n = ex.getRequestURI().getPath().substring("/rr/".length());
        boolean ok = "GET".equals(ex.getRequestMethod()) && !n.isEmpty() && n.chars().allMatch(Character::isDigit);
        byte[] body = (ok ? "reply " + n + "\n" : "not found\n").getBytes(StandardCharsets.US_ASCII);
        ex.getResponseHeaders().set("Content-Type", "text/plain");
        // A known length (not chunked) keeps the connection open for the next request.
        ex.sendResponseHeaders(ok ? 200 : 404, body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
    }
}
