#!/usr/bin/perl
# Shadow traffic: llm_router_shadow URI model=NAME [sample=] [max_answer=]
# [timeout=] sends a sample of the routed requests, rewritten for NAME,
# to an internal location in parallel with the client's request, by a
# request the module makes on its own.  The client's answer is never
# delayed, changed or failed by it; once both answers are done the
# shadow's request is logged with $llm_router_shadow_record, one JSON
# line that pairs the two answers.  Its tokens and cost count under NAME,
# in the metrics and in the budgets.
#
# The mocks: "mini" answers the client (the default), "large" is the
# shadow model.  nginx sends the client's headers to both: X-Mock-Only
# says which of them obeys the X-Mock-* controls of a request.  The
# default reply names the mock and the model it was asked for, so that
# the two answers of a pair tell which mock wrote them.

use strict;
use warnings;

use Test::More;
use Compress::Zlib ();
use JSON::PP ();
use POSIX qw(ceil);
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(json_encode json_decode only content_of route_of);

# pico-USD a token: input, output
my %PRICE = (mini => [150_000, 600_000], large => [2_500_000, 10_000_000]);

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');

# a router location: $extra are its own directives (the shadow, budgets)
sub router {
    my ($path, $extra, $default) = @_;
    $default //= 'mini';
    return <<"EOF";
    location = $path {
        llm_router on;
        llm_router_default $default;
        $extra
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass \$llm_router_url;
    }
EOF
}

my $SHADOW = 'llm_router_shadow /_shadow';

my $conf = <<'EOF'
llm_router_zone llm 1m;

llm_router_model mini    { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; }
llm_router_model large   { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }
llm_router_model mini_m  { api messages; url http://127.0.0.1:%%PORT_mini%%/v1/messages;
                           model claude-mini; key sk-mini; price 1 5; }
llm_router_model large_m { api messages; url http://127.0.0.1:%%PORT_large%%/v1/messages;
                           model claude-large; key sk-large; price 3 15; }
llm_router_model mini_r  { api responses; url http://127.0.0.1:%%PORT_mini%%/v1/responses;
                           model gpt-4.1-mini; key sk-mini; price 0.40 1.60; }
llm_router_model large_r { api responses; url http://127.0.0.1:%%PORT_large%%/v1/responses;
                           model gpt-4.1; key sk-large; price 2 8; }

llm_router_budget team  key=$http_x_user limit=1 period=day action=reject;
# mini's worst case of "hello" with max_tokens 98 fits (60 µUSD), large's (1000 µUSD) not
llm_router_budget tight key=$http_x_user limit=0.0005 period=day action=reject;

# the client's record, with its $request_id
log_format llm    escape=none '{"id":"$request_id","log":$llm_router_log}';
log_format shadow escape=none '$llm_router_shadow_record';
log_format seen   'rid=$request_id auth=[$http_authorization] xkey=[$http_x_api_key] model=$llm_router_model';

server {
    listen 127.0.0.1:%%PORT%%;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    %%ROUTE_HEADERS%%
    add_header X-Request-Id $request_id always;

EOF
    . router('/v1/chat/completions', "$SHADOW model=large; llm_router_rule big \$http_x_big=1 large;")
    . router('/plain', '')
    . router('/s0', "$SHADOW model=large sample=0%;")
    . router('/s100', "$SHADOW model=large sample=100%;")
    . router('/s30', "$SHADOW model=large sample=30%;")
    . router('/s12', "$SHADOW model=large sample=12.5;")
    . router('/timeout', "$SHADOW model=large timeout=1s;")
    . router('/budget', "$SHADOW model=large; llm_router_budget team;")
    . router('/tight', "$SHADOW model=large; llm_router_budget tight;")
    . router('/cut', "$SHADOW model=large max_answer=41;")
    . router('/self', "$SHADOW model=large;", 'large')
    . router('/v1/messages', "llm_router_api messages; $SHADOW model=large_m;", 'mini_m')
    . router('/v1/responses', "llm_router_api responses; $SHADOW model=large_r;", 'mini_r')
    . <<'EOF';

    location = /metrics {
        llm_router_status;
    }

    location = /_shadow {
        internal;
        proxy_pass $llm_router_url;
        access_log %%PREFIX%%/shadow.log shadow if=$llm_router_shadow_record;
        access_log %%PREFIX%%/seen.log seen;
    }
}
EOF

$t->config($conf)->run;

# ------------------------------------------------------------ helpers

my $JSON = JSON::PP->new->utf8->canonical;

# the decoded lines of a log file of the prefix
sub lines_of {
    my ($file) = @_;
    return map { my $l = $_; eval { $JSON->decode($l) } // { _invalid => $l } }
           grep { length } split /\n/, $t->read_file($file);
}

# the pair records: { id => record } (an invalid line under "_invalid")
sub pairs {
    my %p;
    for (lines_of('shadow.log')) {
        if (ref $_ eq 'HASH' && defined $_->{id} && !$_->{_invalid}) { $p{$_->{id}} = $_ }
        else { push @{ $p{_invalid} }, $_ }
    }
    return \%p;
}

# poll (10 s at most) until $cond returns true; returns its last value
sub eventually {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    my $v;
    until (($v = $cond->()) || time > $deadline) {
        sleep 0.05;
    }
    return $v;
}

# the pair record of $id, waiting for it (undef if none comes)
sub pair_of {
    my ($id, $timeout) = @_;
    return eventually(sub { pairs()->{$id} }, $timeout);
}

# the client's record of $id ($llm_router_log), waiting for it
sub record_of {
    my ($id) = @_;
    return eventually(sub {
        my ($r) = grep { ref $_ eq 'HASH' && ($_->{id} // '') eq $id } lines_of('llm.log');
        return $r ? $r->{log} : undef;
    }, 5);
}

# the seen.log line of the shadow request with this $request_id
sub seen_of {
    my ($id) = @_;
    return eventually(sub { (grep { /^rid=\Q$id\E / } split /\n/, $t->read_file('seen.log'))[0] }, 5);
}


sub shadow_total {
    my ($result, $model, $rule) = @_;
    return $t->family('llm_router_shadow_total')->{sprintf 'model="%s",rule="%s",result="%s"',
                                                       $model // 'mini', $rule // 'default', $result} // 0;
}

# integer pico-USD of a USD number (exact for what the module prints)
sub pico { my ($usd) = @_; return defined $usd ? sprintf('%.0f', $usd * 1e12) + 0 : undef }

# a chat request to $path, timed; returns the response with {id} (its
# $request_id) and {elapsed}
sub req {
    my ($path, $text, %o) = @_;
    my $t0 = time;
    my $r = $t->ask($text, path => $path, %o);
    $r->{elapsed} = time - $t0;
    $r->{id} = $r->{headers}{'x-request-id'} // 'none';
    return $r;
}

# the default reply of a mock: "[NAME] MODEL says: ..."
sub says {
    my ($mock, $model, $text, $n) = @_;
    $n //= 1;
    my @w = split ' ', $text;
    return sprintf '[%s] %s says: I read %d message%s; your last one had %d word%s.',
        $mock, $model, $n, $n == 1 ? '' : 's', scalar @w, @w == 1 ? '' : 's';
}

# the cost a mock bills for a chat answer: its usage at $model's prices
sub chat_cost {
    my ($model, $messages, $reply) = @_;
    my $chars = 0;
    $chars += length $_->{content} for @$messages;
    my $p = ceil($chars / 4) + 3 * @$messages + 3;
    my $c = ceil(length($reply) / 4);
    return $p * $PRICE{$model}[0] + $c * $PRICE{$model}[1];
}

# the mock's answer without what differs between two answers
sub stable { my ($s) = @_; $s =~ s/"id":"chatcmpl-[\w-]+"/"id":"ID"/g; $s =~ s/"created":\d+/"created":0/g; return $s }

sub chat_text { join '', map { ref $_ eq 'HASH' ? $_->{choices}[0]{delta}{content} // '' : '' } @{ $_[0]{events} } }

sub sent_to { my ($mock) = @_; return scalar(() = $t->requests($mock)) }

# "field=value ..." of a pair record, for one is_deeply that shows all
sub fields_of {
    my ($p, @keys) = @_;
    return 'no pair record' unless ref $p eq 'HASH';
    return join ' ', map {
        my $v = $p->{$_};
        "$_=" . (!defined $v ? 'null' : JSON::PP::is_bool($v) ? ($v ? 'true' : 'false') : $v);
    } @keys;
}

# warm the worker up
$t->ask('warm up', path => '/plain');

# ------------------------------------------------------------ the client does not wait

{
    my $slow = only('large', 'X-Mock-Delay-Ms' => 2000);
    my $plain = req('/plain', 'how fast is this', headers => $slow);
    my $shadowed = req('/v1/chat/completions', 'how fast is this', headers => $slow);
    is_deeply [$shadowed->{status}, $shadowed->{headers}{'x-mock-provider'}, content_of($shadowed)],
              [200, 'mini', content_of($plain)], 'slow shadow: the client gets mini\'s answer';
    ok $shadowed->{elapsed} < $plain->{elapsed} + 0.5 && $shadowed->{elapsed} < 1,
       'slow shadow (2 s): the client is answered about as fast as without a shadow, '
       . 'the connection closed at once'
        or diag sprintf 'shadowed %.3f s, without shadow %.3f s', $shadowed->{elapsed}, $plain->{elapsed};
    ok !pairs()->{$shadowed->{id}}, 'slow shadow: no pair record while the shadow is under way';
    my $p = pair_of($shadowed->{id});
    my $ms = $p->{shadow_latency_ms} // 'none';
    is_deeply [fields_of($p, qw(shadow_result shadow_status)), $ms ne 'none' && $ms >= 1900 ? 'latency >= 2 s' : "latency $ms"],
              ['shadow_result=ok shadow_status=200', 'latency >= 2 s'],
              'slow shadow: its pair record comes when the shadow is done, after the 2 s';
}

# the next request on a kept-alive connection does not wait for the shadow
{
    my $c = $t->connect;
    my $t0 = time;
    my $first = $t->ask('keep me alive', conn => $c, headers => only('large', 'X-Mock-Delay-Ms' => 2000));
    my $second = $t->ask('and the next one', conn => $c);
    my $t_second = time - $t0;
    my $early = pairs()->{$first->{headers}{'x-request-id'} // 'none'};
    my $p = pair_of($first->{headers}{'x-request-id'} // 'none');
    my $t_pair = time - $t0;
    close $c;

    is_deeply [$first->{status}, $second->{status}, $second->{headers}{'x-mock-provider'}],
              [200, 200, 'mini'], 'keepalive: both requests of the connection are answered';
    ok $t_second < 1.2, 'keepalive: the second request is answered well before the first one\'s shadow ends (2 s)'
        or diag sprintf 'the second answer came %.3f s after the first request', $t_second;
    ok !$early, 'keepalive: the first request\'s pair record is not there yet when the second is answered';
    ok $p && $t_pair >= 1.9, 'keepalive: it comes after the 2 s of the shadow'
        or diag sprintf 'pair record %s after %.3f s', $p ? 'found' : 'not found', $t_pair;
    my $p2 = pair_of($second->{headers}{'x-request-id'} // 'none');
    is fields_of($p2, qw(model shadow_model shadow_result)), 'model=mini shadow_model=large shadow_result=ok',
       'keepalive: the second request has its pair record too';
}

# ------------------------------------------------------------ the pair record

{
    my @messages = ({ role => 'system', content => 'Be brief.' },
                    { role => 'user', content => "Two lines:\nfirst, then \"second\" \x{e9}t\x{e9}" });
    my $body = { model => 'auto', messages => \@messages, temperature => 0.5,
                 metadata => { nested => [1, 2, { x => JSON::PP::true }] } };
    # written over several lines: the record has them as spaces
    my $raw = JSON::PP->new->utf8->canonical->pretty->encode($body);
    my $t0 = time;
    my $r = $t->chat(body => $raw, headers => { 'X-User' => 'pair' });
    my $id = $r->{headers}{'x-request-id'} // 'none';
    my $p = pair_of($id);
    my $lines = grep { /\Q$id\E/ } split /\n/, $t->read_file('shadow.log');
    my $rec = record_of($id);

    is $r->{status}, 200, 'pair: the client is answered';
    ok ref $p eq 'HASH' && !$p->{_invalid}, 'pair: the record is one valid JSON line'
        or diag "shadow.log: " . $t->read_file('shadow.log');
    is $lines, 1, 'pair: one line for the request';
    is_deeply $p->{request}, $body, 'pair: "request" is the client\'s body, as JSON';
    my $user = $messages[1]{content};
    my @want = ('id=' . $id, 'api=chat', 'rule=default', 'model=mini', 'status=200',
                'answer=' . says('mini', 'gpt-4o-mini', $user, 2), 'escalated=false', 'shadow_model=large',
                'shadow_answer=' . says('large', 'gpt-4o', $user, 2), 'shadow_status=200', 'shadow_result=ok');
    is_deeply [map { fields_of($p, /^(\w+)=/) } @want], \@want,
              'pair: the id, api, rule, the routed model and its answer, the shadow model and its answer';
    ok defined $p->{shadow_latency_ms} && $p->{shadow_latency_ms} =~ /^\d+$/
       && $p->{shadow_latency_ms} <= 1000 * (time - $t0) + 50,
       'pair: shadow_latency_ms, milliseconds';

    my $sent = $t->upstream_json('large');
    is_deeply [$sent->{model}, $sent->{messages}, $sent->{temperature}, $sent->{metadata}],
              ['gpt-4o', \@messages, 0.5, $body->{metadata}],
              'pair: the shadow model got the client\'s body, with its own model name';
    is pico($p->{shadow_cost_usd}), chat_cost('large', \@messages, says('large', 'gpt-4o', $user, 2)),
       'pair: shadow_cost_usd is large\'s usage at large\'s prices';
    is_deeply [pico($p->{cost_usd}), pico($rec->{cost_usd})],
              [(chat_cost('mini', \@messages, says('mini', 'gpt-4o-mini', $user, 2))) x 2],
              'pair: cost_usd is the client\'s, as in its own record';
}

# max_answer: each answer kept at most 41 bytes, at a character boundary
{
    my $reply = "\xc3\xa9" x 30;      # 30 × "é", 60 bytes
    my $r = req('/cut', 'cut it', headers => { 'X-Mock-Reply' => $reply });
    my $p = pair_of($r->{id});
    my $want = "\x{e9}" x 20;
    is_deeply [$r->{status}, $p->{answer}, $p->{shadow_answer}], [200, $want, $want],
              'max_answer=41: both answers cut to 40 bytes, not inside a character';
    is content_of($r), "\x{e9}" x 30, 'max_answer: the client\'s answer is whole';
}

# ------------------------------------------------------------ sampling

{
    my %group = (s0 => [0, 10], s100 => [100, 10], s30 => [30, 40], s12 => [12.5, 40]);
    my %ids;
    my %status;
    my $before = shadow_total('ok');
    for my $g (sort keys %group) {
        for my $i (1 .. $group{$g}[1]) {
            my $r = req("/$g", "sample $g $i");
            $status{$r->{status}}++;
            push @{ $ids{$g} }, $r->{id};
        }
    }
    my %want = map { my $g = $_; $g => [sort grep { Compress::Zlib::crc32($_) % 10000 < $group{$g}[0] * 100 } @{ $ids{$g} }] }
               keys %group;
    my $total = 0;
    $total += @$_ for values %want;
    my $all = join ' ', map { @$_ } values %ids;
    my %mine = map { $_ => 1 } map { @$_ } values %ids;
    eventually(sub { (grep { $mine{$_} } keys %{ pairs() }) >= $total });
    sleep 0.3;    # a record of more than expected would come as quickly
    my $pairs = pairs();
    my %got = map { my $g = $_; $g => [sort grep { $pairs->{$_} } @{ $ids{$g} }] } keys %group;

    is_deeply \%status, { 200 => 100 }, 'sampling: every client is answered';
    is_deeply $got{s0}, [], 'sample=0%: nothing is shadowed';
    is_deeply $got{s100}, [sort @{ $ids{s100} }], 'sample=100%: everything is';
    is_deeply $got{s30}, $want{s30},
              sprintf('sample=30%%: exactly the requests whose crc32($request_id) %% 10000 < 3000 (%d of 40)',
                      scalar @{ $want{s30} });
    is_deeply $got{s12}, $want{s12},
              sprintf('sample=12.5 (without %%): exactly those whose crc32 %% 10000 < 1250 (%d of 40)',
                      scalar @{ $want{s12} });

    my %selected = map { $_ => 1 } map { @$_ } values %want;
    my @shadow_field = map {
        my $rec = record_of($_);
        my $s = ref $rec eq 'HASH' ? $rec->{shadow} : 'no record';
        my $ok = $selected{$_} ? ref $s eq 'HASH' && ($s->{model} // '') eq 'large'
                               : ref $rec eq 'HASH' && exists $rec->{shadow} && !defined $s;
        $ok ? () : "$_: " . json_encode({ shadow => $s });
    } map { @{ $ids{$_} } } sort keys %ids;
    is_deeply \@shadow_field, [], 'sampling: the client\'s record has "shadow" for the selected ones, null for the others';
    is eventually(sub { my $n = shadow_total('ok') - $before; $n == $total ? $n : 0 }, 5) || shadow_total('ok') - $before,
       $total, 'sampling: llm_router_shadow_total{result="ok"} counts the shadowed requests';
}

# ------------------------------------------------------------ streams

{
    my $text = 'stream this one';
    my $r = req('/v1/chat/completions', $text, fields => { stream => JSON::PP::true });
    my $p = pair_of($r->{id});
    my $client = chat_text($r);
    is_deeply [$r->{status}, $r->{headers}{'content-type'}, $r->{events}[-1]], [200, 'text/event-stream', '[DONE]'],
              'chat stream: the client gets its stream';
    is_deeply [$p->{answer}, $p->{shadow_answer}, $p->{shadow_result}],
              [$client, says('large', 'gpt-4o', $text), 'ok'],
              'chat stream: the pair has the text the client got, assembled from the deltas, and the shadow\'s';
    is $client, says('mini', 'gpt-4o-mini', $text), 'chat stream: (which is mini\'s reply)';
    my $sent = $t->upstream_json('large');
    is_deeply [$sent->{stream}, ref $sent->{stream_options} ? $sent->{stream_options}{include_usage} : undef],
              [JSON::PP::true, JSON::PP::true], 'chat stream: the shadow is a stream too, asking for usage';
    ok(($p->{shadow_cost_usd} // 0) > 0, 'chat stream: the shadow\'s stream has a cost');
}

{
    my $text = 'a messages stream';
    my $r = $t->http(method => 'POST', path => '/v1/messages',
                     headers => ['Content-Type' => 'application/json', 'anthropic-version' => '2023-06-01'],
                     body => json_encode({ model => 'auto', max_tokens => 64, stream => JSON::PP::true,
                                           messages => [{ role => 'user', content => $text }] }));
    my $id = $r->{headers}{'x-request-id'} // 'none';
    my $client = join '', map { $_->{delta}{text} // '' }
                          grep { ref $_ eq 'HASH' && ($_->{type} // '') eq 'content_block_delta' } @{ $r->{events} };
    my $p = pair_of($id);
    is_deeply [$r->{status}, $client, fields_of($p, qw(api model shadow_model shadow_status shadow_result))],
              [200, says('mini', 'claude-mini', $text), 'api=messages model=mini_m shadow_model=large_m shadow_status=200 shadow_result=ok'],
              'messages stream: shadowed by the messages model';
    is_deeply [$p->{answer}, $p->{shadow_answer}], [$client, says('large', 'claude-large', $text)],
              'messages stream: the pair has the text_deltas the client got and the shadow\'s text';
}

{
    my $text = 'a responses stream';
    my $r = $t->http(method => 'POST', path => '/v1/responses', headers => ['Content-Type' => 'application/json'],
                     body => json_encode({ model => 'auto', stream => JSON::PP::true, input => $text }));
    my $id = $r->{headers}{'x-request-id'} // 'none';
    my $client = join '', map { $_->{delta} // '' }
                          grep { ref $_ eq 'HASH' && ($_->{type} // '') eq 'response.output_text.delta' } @{ $r->{events} };
    my $p = pair_of($id);
    is_deeply [$r->{status}, $client, fields_of($p, qw(api model shadow_model shadow_status shadow_result))],
              [200, says('mini', 'gpt-4.1-mini', $text), 'api=responses model=mini_r shadow_model=large_r shadow_status=200 shadow_result=ok'],
              'responses stream: shadowed by the responses model';
    is_deeply [$p->{answer}, $p->{shadow_answer}], [$client, says('large', 'gpt-4.1', $text)],
              'responses stream: the pair has the deltas the client got and the shadow\'s text';
}

# ------------------------------------------------------------ failing shadows

{
    my $h = only('large', 'X-Mock-Status' => 500);
    my $before = shadow_total('error');
    my $plain = req('/plain', 'fail the shadow', headers => $h);
    my $r = req('/v1/chat/completions', 'fail the shadow', headers => $h);
    is_deeply [$r->{status}, $r->{headers}{'content-type'}, stable($r->{body})],
              [$plain->{status}, $plain->{headers}{'content-type'}, stable($plain->{body})],
              'a failing shadow (500): the client\'s answer is the same as without a shadow';
    my $p = pair_of($r->{id});
    is fields_of($p, qw(status shadow_status shadow_result)), 'status=200 shadow_status=500 shadow_result=error',
       'a failing shadow: shadow_result error, its status';
    is eventually(sub { shadow_total('error') - $before }, 5), 1, 'a failing shadow: llm_router_shadow_total{result="error"}';
}

{
    my $h = only('large', 'X-Mock-Delay-Ms' => 5000);
    my $before = shadow_total('timeout');
    my $plain = req('/plain', 'hang the shadow', headers => $h);
    my $t0 = time;
    my $r = req('/timeout', 'hang the shadow', headers => $h);
    is_deeply [$r->{status}, $r->{headers}{'content-type'}, stable($r->{body})],
              [$plain->{status}, $plain->{headers}{'content-type'}, stable($plain->{body})],
              'a hanging shadow: the client\'s answer is the same as without a shadow';
    ok $r->{elapsed} < $plain->{elapsed} + 0.5, 'a hanging shadow: and as quick'
        or diag sprintf '%.3f s, without shadow %.3f s', $r->{elapsed}, $plain->{elapsed};
    my $p = pair_of($r->{id});
    my $when = time - $t0;
    is fields_of($p, qw(status shadow_status shadow_result)), 'status=200 shadow_status=0 shadow_result=timeout',
       'a hanging shadow: given up after timeout=1s, shadow_status 0';
    ok $p && $when < 4.5 && ($p->{shadow_latency_ms} // 0) >= 950 && $p->{shadow_latency_ms} < 4000,
       'a hanging shadow: its record comes after the timeout, not the 5 s of the answer'
        or diag sprintf 'after %.3f s, shadow_latency_ms %s', $when, $p->{shadow_latency_ms} // 'none';
    is eventually(sub { shadow_total('timeout') - $before }, 5), 1,
       'a hanging shadow: llm_router_shadow_total{result="timeout"}';
}

# ------------------------------------------------------------ costs

{
    # the shadow ends first: the client's record has its outcome
    my $r = req('/v1/chat/completions', 'slow primary', headers => only('mini', 'X-Mock-Delay-Ms' => 1000));
    my $rec = record_of($r->{id});
    my $p = pair_of($r->{id});
    my $s = ref $rec eq 'HASH' && ref $rec->{shadow} eq 'HASH' ? $rec->{shadow} : {};
    is_deeply [$r->{status}, fields_of($s, qw(model result status))], [200, 'model=large result=ok status=200'],
              'the shadow ended before the client\'s answer: its outcome is in the client\'s record';
    is_deeply [pico($s->{cost_usd}), ($s->{latency_ms} // 'null') =~ /^\d+$/ ? 'latency' : 'no latency'],
              [pico($p->{shadow_cost_usd}), 'latency'],
              'the client\'s record: shadow.cost_usd is the pair record\'s shadow_cost_usd';
    ok pico($s->{cost_usd} // 0) > 0, 'and not 0';

    # the shadow is slower: pending
    $r = req('/v1/chat/completions', 'slow shadow', headers => only('large', 'X-Mock-Delay-Ms' => 1500));
    $rec = record_of($r->{id});
    is json_encode(ref $rec eq 'HASH' ? $rec->{shadow} : 'no record'),
       json_encode({ model => 'large', result => 'pending', status => undef, latency_ms => undef, cost_usd => undef }),
       'the shadow is slower: "pending" in the client\'s record, with nulls';
    $p = pair_of($r->{id});
    is fields_of($p, qw(shadow_result shadow_status)), 'shadow_result=ok shadow_status=200',
       'the pair record has its outcome';
}

{
    # large answers shadows only: its cost counter grows by their costs
    my $tokens = sub { [map { $t->family("llm_router_${_}_tokens_total")->{'model="large"'} // 0 } qw(prompt completion)] };
    my $tokens_before = $tokens->();
    my $before = pico($t->family('llm_router_cost_usd_total')->{'model="large"'} // 0);
    my @ids = map { req('/v1/chat/completions', "count me $_", headers => { 'X-User' => 'counted' })->{id} } 1 .. 3;
    my @p = map { pair_of($_) } @ids;
    my $sum = 0;
    $sum += pico($_->{shadow_cost_usd} // 0) for @p;
    my $delta = eventually(sub {
        my $d = pico($t->family('llm_router_cost_usd_total')->{'model="large"'} // 0) - $before;
        $d == $sum ? "$d" : undef;
    }, 5) // pico($t->family('llm_router_cost_usd_total')->{'model="large"'} // 0) - $before;
    ok $sum > 0, 'three shadows cost something';
    is $delta, $sum, 'llm_router_cost_usd_total{model="large"} grows by the sum of their shadow_cost_usd';
    # each shadow: "count me N" is 3 + 3 + 3 prompt tokens; its reply
    my $completion = 0;
    $completion += ceil(length(says('large', 'gpt-4o', "count me $_")) / 4) for 1 .. 3;
    my $tokens_after = $tokens->();
    is_deeply [map { $tokens_after->[$_] - $tokens_before->[$_] } 0, 1], [27, $completion],
              'llm_router_prompt_tokens_total and completion_tokens_total of large grow by the shadows\' usage';
}

{
    # a budget spends the clients' costs and the shadows'
    my $user = 'budget-' . int(time);
    my @ids = (req('/budget', 'budget one', headers => { 'X-User' => $user })->{id},
               req('/budget', 'budget two', headers => { 'X-User' => $user, %{ only('mini', 'X-Mock-Delay-Ms' => 500) } })->{id},
               req('/budget', 'budget three', headers => { 'X-User' => $user, %{ only('large', 'X-Mock-Delay-Ms' => 500) } })->{id});
    my @p = map { pair_of($_) } @ids;
    my @rec = map { record_of($_) } @ids;
    my $want = 0;
    $want += pico($_->{cost_usd} // 0) for @rec;
    $want += pico($_->{shadow_cost_usd} // 0) for @p;
    my $spent = sub { pico($t->family('llm_router_budget_spent_usd')->{qq(budget="team",key="$user")} // 0) };
    my $got = eventually(sub { my $s = $spent->(); $s == $want ? "$s" : undef }, 5) // $spent->();
    ok(($p[0]{shadow_cost_usd} // 0) > 0 && ($rec[0]{cost_usd} // 0) > 0, 'budget: clients and shadows cost something');
    is $got, $want, 'budget: the spend of the key is the clients\' cost_usd plus the shadows\' shadow_cost_usd';
}

# ------------------------------------------------------------ secrets

{
    my $r = req('/v1/chat/completions', 'keep my secrets',
                headers => { Authorization => 'Bearer client-secret', 'X-Api-Key' => 'client-secret-2' });
    my $p = pair_of($r->{id});
    is fields_of($p, qw(shadow_status shadow_result)), 'shadow_status=200 shadow_result=ok',
       'secrets: the shadow provider (--key sk-large) accepts the shadow\'s key';
    my $cap = $t->capture('large');
    is_deeply [$cap->{headers}{authorization}, $cap->{headers}{'x-api-key'}, $cap->{head} =~ /client-secret/ ? 'leaked' : 'clean'],
              [['Bearer sk-large'], undef, 'clean'],
              'secrets: the client\'s credentials never reach the shadow provider, only large\'s key';
    my $seen = seen_of($r->{id}) // 'no line';
    like $seen, qr/^rid=\Q$r->{id}\E auth=\[-?\] xkey=\[-?\] /,
         'secrets: the shadow location logs the client\'s $request_id and no credentials';
    like $seen, qr/ model=large$/, 'the shadow location\'s log: $llm_router_model is the shadow model';
}

# ------------------------------------------------------------ skipped

{
    my $before = $t->family('llm_router_shadow_total');
    my $large = sent_to('large');
    my $r = req('/v1/chat/completions', 'route me to large', headers => { 'X-Big' => 1 });
    my $after_id = req('/v1/chat/completions', 'and me to mini')->{id};
    pair_of($after_id);
    my $self = req('/self', 'large by default');
    pair_of(req('/v1/chat/completions', 'once more')->{id});
    is_deeply [route_of($r), route_of($self), sent_to('large') - $large],
              ['large/big', 'large/default', 4],
              'routed to the shadow model: answered by large, which got no shadow of them (2 answers, 2 shadows of others)';
    is_deeply [pairs()->{$r->{id}}, pairs()->{$self->{id}}], [undef, undef],
              'routed to the shadow model: no pair record';
    is_deeply [map { my $x = record_of($_); ref $x eq 'HASH' && exists $x->{shadow} ? $x->{shadow} : 'missing' } $r->{id}, $self->{id}],
              [undef, undef], 'routed to the shadow model: "shadow" is null in the client\'s record';
    my $delta = sub {
        my $after = $t->family('llm_router_shadow_total');
        my %d = map { $_ => ($after->{$_} // 0) - ($before->{$_} // 0) } keys %$after;
        delete $d{$_} for grep { !$d{$_} } keys %d;
        return \%d;
    };
    my $want = 'model="mini",rule="default",result="ok"';
    is_deeply eventually(sub { my $d = $delta->(); keys %$d == 1 && ($d->{$want} // 0) == 2 ? $d : undef }, 3)
              // $delta->(), { 'model="mini",rule="default",result="ok"' => 2 },
              'routed to the shadow model: no shadow counted (only the two others)';
}

{
    my $user = 'tight-' . int(time);
    my $large = sent_to('large');
    my $before = shadow_total('skipped');
    my $r = req('/tight', 'hello', headers => { 'X-User' => $user }, fields => { max_tokens => 98 });
    my $rec = record_of($r->{id});
    is_deeply [route_of($r), json_encode(ref $rec eq 'HASH' ? $rec->{shadow} : 'no record')],
              ['mini/default', json_encode({ model => 'large', result => 'skipped', status => undef,
                                             latency_ms => undef, cost_usd => undef })],
              'budget too small for the shadow\'s worst case: the client is answered, the shadow "skipped"';
    is eventually(sub { shadow_total('skipped') - $before }, 5), 1, 'skipped: llm_router_shadow_total{result="skipped"}';
    sleep 0.3;
    is_deeply [sent_to('large') - $large, pairs()->{$r->{id}}], [0, undef], 'skipped: large got nothing, no pair record';
}

# ------------------------------------------------------------ reload

{
    my $r = req('/v1/chat/completions', 'reload under me', headers => only('large', 'X-Mock-Delay-Ms' => 2000));
    is $r->{status}, 200, 'reload: the client is answered before the shadow ends';
    ok !pairs()->{$r->{id}}, 'reload: the shadow is still under way';
    ok $t->reload, 'reload (HUP) while a shadow is in flight: the old worker exits';
    my $p = pair_of($r->{id}, 2);
    ok $p && ($p->{shadow_result} // '') eq 'ok' && ($p->{shadow_status} // 0) == 200 && ($p->{shadow_latency_ms} // 0) >= 1900,
       'reload: the old worker finished the shadow and wrote its pair record'
        or diag 'pair: ' . json_encode($p // {});
    my $after = req('/v1/chat/completions', 'after the reload');
    is fields_of(pair_of($after->{id}), qw(model shadow_result)), 'model=mini shadow_result=ok',
       'reload: the new worker shadows too';
}

is_deeply pairs()->{_invalid}, undef, 'every line of shadow.log is a valid JSON record with an "id"';

$t->stop;

# ------------------------------------------------------------ configuration

my $c = LLMRouterTest->new;
my $models = 'llm_router_model a { url http://127.0.0.1:1/v1/chat/completions; auth none; }
              llm_router_model b { url http://127.0.0.1:1/v1/chat/completions; auth none; }
              llm_router_model m { api messages; url http://127.0.0.1:1/v1/messages; auth none; }';

is_deeply [map { $c->config_error($models, $_) }
               'llm_router_shadow /_s model=b;',
               'llm_router_shadow /_s model=b sample=0% max_answer=1k timeout=2s;',
               'llm_router_shadow /_s model=b sample=0.5%;',
               'llm_router_shadow /_s model=b sample=12.25;',
               'llm_router_shadow /_s model=b sample=100%;',
               'llm_router_shadow off;',
               'llm_router_api chat; llm_router_shadow /_s model=b;'],
          [('passed') x 7], 'config: valid shadows';
is $c->config_error("$models llm_router_shadow /_s model=b;", ''), 'passed', 'config: at http level';

like $c->config_error($models, 'llm_router_shadow /_s model=x;'), qr/^unknown model "x" in "llm_router_shadow"/,
     'config: an unknown model';
like $c->config_error($models, 'llm_router_shadow _s model=b;'), qr/"_s".*llm_router_shadow|llm_router_shadow.*"_s"/,
     'config: a URI that does not start with "/"';
is_deeply [map { my $e = $c->config_error($models, "llm_router_shadow /_s model=b $_;"); $e =~ s/ in nginx\.conf:N$//; $e }
               'sample=200%', 'sample=-1%', 'sample=abc', 'sample=0.125%', 'timeout=soon', 'max_answer=big', 'foo=1'],
          [map { qq(invalid parameter "$_" in "llm_router_shadow") }
               'sample=200%', 'sample=-1%', 'sample=abc', 'sample=0.125%', 'timeout=soon', 'max_answer=big', 'foo=1'],
          'config: bad parameters';
like $c->config_error($models, 'llm_router_shadow /_s;'), qr/llm_router_shadow/, 'config: model= is required';
like $c->config_error($models, 'llm_router_shadow / model=b;'), qr/"\/".*llm_router_shadow|llm_router_shadow.*"\/"/,
     'config: the URI of the routing location itself';
like $c->config_error($models, 'llm_router_api chat; llm_router_shadow /_s model=m;'), qr/llm_router_shadow|"m"/,
     'config: a shadow model of another API than the location\'s llm_router_api';

done_testing;
