#!/usr/bin/perl
# Faults: a provider that resets the connection in the middle of an
# answer or hangs, clients that go away while their body is read or a
# stream is relayed, slow clients, bodies just under and over the limit.
# Every request ends with a status and a log record, no worker crashes
# (the harness checks the error log when nginx stops) and no temporary
# file is left behind.

use strict;
use warnings;

use Test::More;
use IO::Select;
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(json_encode words);

my $t = LLMRouterTest->new;
$t->mock('mini');

$t->config(<<'EOF')->run;
llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; auth none; price 0.15 0.60; }

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    client_max_body_size 64k;
    client_body_buffer_size 4k;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_read_timeout 500ms;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass $llm_router_url;
    }
}
EOF

my $p = $t->prefix;

sub record { $t->next_record('llm.log') }

sub temp_files {
    my @f = map { glob("$p/${_}_temp/*") } qw(client_body proxy);
    return scalar @f;
}

# A request written by hand on a connection of its own.
sub raw_request {
    my ($body, %o) = @_;
    my $head = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
             . "Content-Type: application/json\r\nConnection: close\r\n"
             . join('', map { "$_: $o{headers}{$_}\r\n" } sort keys %{ $o{headers} || {} })
             . 'Content-Length: ' . ($o{length} // length $body) . "\r\n\r\n";
    my $c = $t->connect;
    print $c $head;
    return $c;
}

# ---------------------------------------------------------------- provider

{
    my $r = $t->ask('reset me', fields => { stream => JSON::PP::true() },
                    headers => { 'X-Mock-Close' => 'after' });
    is $r->{status}, 200, 'a stream reset mid-way: its header went out';
    ok !grep({ $_ eq '[DONE]' } @{ $r->{events} }), 'the client sees it cut, not completed';
    my $rec = record();
    is $rec->{status}, 200, 'the record has it';
    is $rec->{usage_source}, 'estimate', 'no usage came: the tokens are estimated';
}

{
    my $r = $t->ask('reset my JSON', headers => { 'X-Mock-Close' => 'after' });
    ok length($r->{body}) < ($r->{headers}{'content-length'} // 0),
       'a JSON answer reset mid-way reaches the client short of its length';
    is record()->{status}, 200, 'and is logged';
}

{
    my $r = $t->ask('close before', headers => { 'X-Mock-Close' => 'before' });
    is $r->{status}, 502, 'a provider that closes without answering: 502';
    is $r->{json}{error}{message}, 'the model provider could not be reached', 'as JSON';
    is record()->{status}, 502, 'logged';
}

{
    my $t0 = time;
    my $r = $t->ask('hang', headers => { 'X-Mock-Delay-Ms' => 3000 });
    is $r->{status}, 504, 'a provider that hangs: 504 after proxy_read_timeout';
    cmp_ok time - $t0, '<', 2.5, 'without waiting for the provider';
    is $r->{json}{error}{message}, 'the model provider did not answer in time', 'as JSON';
    is record()->{status}, 504, 'logged';
}

# ---------------------------------------------------------------- clients

{
    # the body goes to a temporary file, and the client leaves half-way

    my $body = json_encode({ messages => [ { role => 'user', content => words(4000) } ] });
    my $c = raw_request(substr($body, 0, 10000), length => length $body);
    sleep 0.3;
    close $c;

    my $rec = record();
    is $rec->{status}, 400, 'a client that leaves while its body is read: logged as 400';
    is $rec->{model}, undef, 'not routed';
    is temp_files(), 0, 'its temporary file is removed';
}

{
    # a stream relayed slowly, and the client leaves after the first event

    my $body = json_encode({ model => 'auto', stream => JSON::PP::true(),
                             messages => [ { role => 'user', content => 'go slowly' } ] });
    my $c = raw_request($body, headers => { 'X-Mock-Event-Delay-Ms' => 300 });
    print $c $body;

    my $got = '';
    my $sel = IO::Select->new($c);
    while ($got !~ /data: / && $sel->can_read(3)) {
        sysread($c, $got, 4096, length $got) or last;
    }
    like $got, qr{^HTTP/1.1 200.*data: }s, 'a stream starts';
    close $c;

    my $rec = record();
    is $rec->{status}, 200, 'the client left during the stream: logged with its status';
    is $rec->{model}, 'mini', 'and its model';
}

{
    my $body = json_encode({ model => 'auto', messages => [ { role => 'user', content => words(300) } ] });
    $t->chat(body => $body);
    my $whole = record();
    my $r = $t->chat(body => $body, split => [ map { 100 } 1 .. int(length($body) / 100) ],
                     pause_ms => 20);
    is $r->{status}, 200, 'a client that sends its body slowly';
    is record()->{est_tokens}, $whole->{est_tokens}, 'is parsed as the same body at once';
}

{
    # a large answer read slowly, a few bytes at a time

    my $body = json_encode({ model => 'auto', messages => [ { role => 'user', content => 'big' } ] });
    my $c = raw_request($body, headers => { 'X-Mock-Reply-Bytes' => 300000 });
    print $c $body;

    my $got = '';
    my $sel = IO::Select->new($c);
    my $n = 0;
    while ($sel->can_read(5)) {
        my $k = sysread($c, $got, 4096, length $got) or last;
        sleep 0.002 if $n++ % 4 == 0;
    }
    my ($head, $rest) = split /\r\n\r\n/, $got, 2;
    my ($len) = $head =~ /Content-Length: (\d+)/i;
    ok defined $len && length($rest) == $len, 'a slow reader gets the whole answer';
    my $rec = record();
    is $rec->{status}, 200, 'logged';
    cmp_ok $rec->{completion_tokens}, '>=', 75000, 'with its usage';
}

# ---------------------------------------------------------------- limits

{
    my $limit = 64 * 1024;
    my $frame = json_encode({ messages => [ { role => 'user', content => '' } ] });
    my $fill = $limit - length $frame;

    my $under = json_encode({ messages => [ { role => 'user', content => 'x' x $fill } ] });
    is length $under, $limit, 'a body of exactly client_max_body_size';
    my $before = () = $t->requests('mini');

    my $r = $t->chat(body => $under);
    is $r->{status}, 200, 'is routed';
    record();

    my $over = json_encode({ messages => [ { role => 'user', content => 'x' x ($fill + 1) } ] });
    $r = $t->chat(body => $over);
    is $r->{status}, 413, 'one byte more: 413';
    is $r->{json}{error}{message}, 'the request body is larger than client_max_body_size', 'as JSON';
    is record()->{status}, 413, 'logged';

    $r = $t->chat(body => $over, chunked => [ 4096 ]);
    is $r->{status}, 413, 'chunked, one byte more: 413';
    record();

    $r = $t->chat(body => $under, chunked => [ 1000, 3000 ]);
    is $r->{status}, 200, 'chunked, exactly the limit: routed';
    record();

    my $after = () = $t->requests('mini');
    is $after - $before, 2, 'only the bodies within the limit reached the provider';
}

is temp_files(), 0, 'no temporary file is left';

$t->stop;

done_testing;
