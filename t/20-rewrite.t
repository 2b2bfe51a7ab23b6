#!/usr/bin/perl
# Body rewrite: the upstream body is the client body byte for byte, except
# the "model" value (and stream_options spliced in for streams), with a
# correct Content-Length, however the client delivered the body.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(words bytes_is json_encode);

my $t = LLMRouterTest->new;
$t->mock('mini');
$t->config(<<'EOF')->run;
llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; auth none; }

server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 10m;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /unbuffered {
        llm_router on;
        llm_router_default mini;
        proxy_buffering off;
        proxy_pass $llm_router_url;
    }

    location = /tiny {                  # bodies go through a temp file
        client_body_buffer_size 128;
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
}
EOF

my $msgs = '"messages":[{"role":"user","content":"hi"}]';
my $so = '"stream_options":{"include_usage":true}';
my $M = '"model":"gpt-4o-mini"';

# [name, client body, expected upstream body]
my @bodies = (
    ['model replaced', qq({"model":"auto",$msgs}), qq({$M,$msgs})],
    ['pinned model replaced by its upstream name', qq({"model":"mini",$msgs}), qq({$M,$msgs})],
    ['white space and key order kept',
     qq({\n  "messages" : [ {"role":"user", "content":"hi"} ],\n  "model" :  "auto" ,\n  "temperature": 0.5\n}\n),
     qq({\n  "messages" : [ {"role":"user", "content":"hi"} ],\n  "model" :  "gpt-4o-mini" ,\n  "temperature": 0.5\n}\n)],
    ['absent model inserted first', qq({$msgs}), qq({$M,$msgs})],
    ['absent model inserted right after {', qq({ \n "messages":[{"role":"user","content":"hi"}] }),
     qq({$M, \n "messages":[{"role":"user","content":"hi"}] })],
    ['stream: stream_options after the model', qq({"model":"auto","stream":true,$msgs}),
     qq({$M,$so,"stream":true,$msgs})],
    ['stream: model last', qq({"stream":true,$msgs,"model":"auto"}),
     qq({"stream":true,$msgs,$M,$so})],
    ['stream without model', qq({"stream":true,$msgs}), qq({$M,$so,"stream":true,$msgs})],
    ['stream_options turned off ask for usage all the same',
     qq({"model":"auto","stream":true,"stream_options":{"include_usage":false},$msgs}),
     qq({$M,"stream":true,"stream_options":{"include_usage":true},$msgs})],
    ['stream_options given are kept',
     qq({"model":"auto","stream":true,"stream_options":{"include_usage":true},$msgs}),
     qq({$M,"stream":true,"stream_options":{"include_usage":true},$msgs})],
    ['stream false: nothing spliced', qq({"model":"auto","stream":false,$msgs}),
     qq({$M,"stream":false,$msgs})],
    ['only the top-level model is replaced',
     q({"metadata":{"model":"x"},"messages":[{"role":"user","content":"\"model\":\"auto\""}],"model":"auto"}),
     q({"metadata":{"model":"x"},"messages":[{"role":"user","content":"\"model\":\"auto\""}],"model":"gpt-4o-mini"})],
    ['nested model keys do not count as present', qq({"metadata":{"model":"x"},$msgs}),
     qq({$M,"metadata":{"model":"x"},$msgs})],
    ['null model replaced', qq({"model":null,$msgs}), qq({$M,$msgs})],
    ['stream null: nothing spliced', qq({"model":"auto","stream":null,$msgs}),
     qq({$M,"stream":null,$msgs})],
    ['escaped model value replaced whole', qq({"model":"au\\u0074o",$msgs}), qq({$M,$msgs})],
    ['UTF-8 and escapes in content kept',
     qq({"model":"auto","messages":[{"role":"user","content":"h\xc3\xa9llo \xe2\x9c\x93 \\u00e9 \\"q\\" \\/ \\n"}]}),
     qq({$M,"messages":[{"role":"user","content":"h\xc3\xa9llo \xe2\x9c\x93 \\u00e9 \\"q\\" \\/ \\n"}]})],
);

# the same bodies, delivered in awkward ways
my $medium = json_encode({ model => 'auto', messages => [{ role => 'user', content => words(600) }] });
my $large = json_encode({ model => 'auto', temperature => 0,
                          messages => [{ role => 'user', content => words(40000) }] });
my $large_stream = qq({"stream":true,"messages":[{"role":"user","content":") . words(40000) . '"}]}';
(my $medium_up = $medium) =~ s/"model":"auto"/$M/;
(my $large_up = $large) =~ s/"model":"auto"/$M/;
(my $large_stream_up = $large_stream) =~ s/^\{/{$M,$so,/;

# [name, client body, expected upstream body, request options]
my @deliveries = (
    ['chunked body', $medium, $medium_up, chunked => [5, 17, 3, 40, 1000]],
    ['chunked body in one chunk', $medium, $medium_up, chunked => 1],
    ['model split across chunks with pauses', qq({"model":"auto",$msgs}), qq({$M,$msgs}),
     chunked => [3, 4, 5, 2, 3], pause_ms => 20],
    ['many small writes with pauses', $medium, $medium_up, split => [(7) x 40], pause_ms => 2],
    ['HTTP/1.0 client', $medium, $medium_up, http10 => 1],
    ['large body via a temp file', $large, $large_up, path => '/tiny'],
    ['large chunked body via a temp file', $large, $large_up, path => '/tiny',
     chunked => [100, 3000, 50000]],
    ['large stream body via a temp file', $large_stream, $large_stream_up, path => '/tiny'],
    ['large body in memory buffers', $large, $large_up, split => [1000, 30000, 7], pause_ms => 10],
);

plan tests => 3 * (@bodies + @deliveries) + 1 + 4 + 5 + 1;

for my $c (@bodies, @deliveries) {
    my ($name, $body, $want, %opts) = @$c;
    my $r = $t->chat(body => $body, %opts);
    is $r->{status}, 200, "$name: status";
    my $cap = $t->capture('mini');
    bytes_is $cap->{body}, $want, "$name: upstream body";
    is_deeply [$cap->{headers}{'content-length'}, $cap->{headers}{'transfer-encoding'}],
              [[length $want], undef], "$name: Content-Length";
}

like $t->error_log, qr/a client request body is buffered to a temporary file/,
     '(the /tiny bodies did go through a temp file)';

# one kept-alive connection, requests of different kinds in a row
my $conn = $t->connect;
for my $c (@bodies[7, 0, 5, 8]) {
    my ($name, $body, $want) = @$c;
    my $r = $t->chat(conn => $conn, body => $body);
    is "$r->{status} " . $t->capture('mini')->{body}, "200 $want", "keep-alive: $name";
}
close $conn;

# headers: Accept-Encoding dropped, the others passed on
my $r = $t->chat(body => qq({"model":"auto",$msgs}),
                 headers => { 'Accept-Encoding' => 'gzip, br', 'X-Trace' => 'abc' });
my $cap = $t->capture('mini');
is $cap->{headers}{'accept-encoding'}, undef, 'Accept-Encoding not forwarded';
is_deeply [$cap->{headers}{'x-trace'}, $cap->{headers}{'content-type'}],
          [['abc'], ['application/json']], 'other client headers forwarded';

# the provider's answer comes back unchanged
is $r->{json}{choices}[0]{message}{content},
   '[mini] gpt-4o-mini says: I read 1 message; your last one had 1 word.', 'JSON answer relayed';

$r = $t->chat(body => qq({"model":"auto","stream":true,$msgs}));
is join('', map { ref $_ ? $_->{choices}[0]{delta}{content} // '' : '' } @{ $r->{events} }),
   '[mini] gpt-4o-mini says: I read 1 message; your last one had 1 word.', 'SSE answer relayed';

# with proxy_buffering off the events reach the client as they are sent
$r = $t->chat(path => '/unbuffered', body => qq({"model":"auto","stream":true,$msgs}),
              headers => { 'X-Mock-Event-Delay-Ms' => 60 });
my @reads = @{ $r->{reads} };
ok @reads >= 4 && $reads[-1] > 0.3, 'SSE events are not held back'
    or diag sprintf '%d reads, the last after %.3f s', scalar @reads, $reads[-1] // 0;

$t->stop;
