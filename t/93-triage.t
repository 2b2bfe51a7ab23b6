#!/usr/bin/perl
# Triage by a small model: llm_router_triage URI model=NAME ... names an
# internal location that reaches a small model, and a rule condition
# triage=LABEL uses its verdict.  The module builds the triage request
# (llm_router_triage_prompt, the current user message, a bounded slice of
# the history), posts it in a background subrequest, and resumes the rule
# walk with the label of the answer.  A timeout, an error or an answer
# without a label makes the condition false; the client never sees it.
#
# The mock "nano" is the triage model: the triage location turns the
# client's X-Triage* headers into the mock's X-Mock-* controls, so that
# each request chooses what the triage model answers, and how slowly.

use strict;
use warnings;

use Test::More;
use IO::Select;
use POSIX qw(ceil);
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(route_of json_decode usd words);

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');
$t->mock('nano', key => 'sk-nano');
my $dead = 'http://127.0.0.1:' . LLMRouterTest::free_port() . '/v1/chat/completions';

my %PRICE = (nano => [100_000, 400_000]);     # pico-USD a token

$t->config(<<"EOF" . <<'EOF')->run;
llm_router_model gone  { url $dead; model gone-1; auth none; }
llm_router_model dead  { url $dead; model dead-1; auth none; fallback large; }
EOF
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }
llm_router_model nano  { url %%URL_nano%%;  model nano-1;      key sk-nano;  price 0.10 0.40; }

llm_router_zone llm 1m;
log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    client_body_buffer_size 1k;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    %%ROUTE_HEADERS%%
    add_header X-LLM-Triage $llm_router_triage always;

    llm_router_rule code code large;
    llm_router_rule triaged triage=complex large;
    llm_router_default mini;
    access_log %%PREFIX%%/llm.log llm;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_triage /_triage model=nano timeout=1s cache=off;
        proxy_pass $llm_router_url;
    }

    location = /cached {
        llm_router on;
        llm_router_triage /_triage model=nano timeout=1s cache=1m;
        proxy_pass $llm_router_url;
    }

    location = /history {
        llm_router on;
        llm_router_triage /_triage model=nano history=6 cache=off;
        llm_router_triage_prompt "Say simple or complex.";
        proxy_pass $llm_router_url;
    }

    location = /json {
        llm_router on;
        llm_router_triage /_triage model=nano field=label cache=off;
        proxy_pass $llm_router_url;
    }

    location = /html {
        llm_router on;
        llm_router_triage /_html model=nano cache=off;
        proxy_pass $llm_router_url;
    }

    location = /plain {
        llm_router on;
        llm_router_triage /_plain model=nano cache=off;
        proxy_pass $llm_router_url;
    }

    location = /down {
        llm_router on;
        llm_router_triage /_down model=gone cache=off;
        proxy_pass $llm_router_url;
    }

    location = /chain {
        llm_router on;
        llm_router_triage /_triage model=nano cache=off;
        llm_router_rule triaged triage=complex dead;
        proxy_pass $llm_router_url;
    }

    location = /metrics {
        llm_router_status;
    }

    location = /explain {
        llm_router_explain;
        llm_router_triage /_triage model=nano cache=off;
    }

    location = /_triage {
        internal;
        proxy_set_header X-Mock-Reply $http_x_triage;
        proxy_set_header X-Mock-Delay-Ms $http_x_triage_delay;
        proxy_set_header X-Mock-Status $http_x_triage_status;
        proxy_pass $llm_router_url;
    }

    location = /_html {
        internal;
        default_type text/html;
        return 200 "<html><body>complex</body></html>";
    }

    location = /_plain {
        internal;
        default_type text/plain;
        return 200 "Complex\n";
    }

    location = /_down {
        internal;
        proxy_pass $llm_router_url;
    }
}
EOF

sub nano_count { scalar(() = $t->requests('nano')) }

# Ask with $text, the triage answering $o{triage} (and %o's other
# controls); returns the response, its log record, how many triage
# requests were made, and the time it took.
sub triaged {
    my ($text, %o) = @_;
    my %h;
    $h{'X-Triage'} = delete $o{triage} if exists $o{triage};
    $h{'X-Triage-Delay'} = delete $o{delay} if $o{delay};
    $h{'X-Triage-Status'} = delete $o{status} if $o{status};
    %h = (%h, %{ delete $o{headers} || {} });
    my $before = nano_count();
    my $t0 = time;
    my $r = $o{messages}
        ? $t->chat(path => $o{path} // '/v1/chat/completions', headers => \%h,
                   body => { model => 'auto', messages => delete $o{messages} })
        : $t->ask($text, headers => \%h, %o);
    my $elapsed = time - $t0;
    return ($r, $t->next_record('llm.log'), nano_count() - $before, $elapsed);
}

# The triage call's cost as the mock bills it: its usage of the request
# the mock received and of the reply.
sub triage_cost {
    my ($reply) = @_;
    my $sent = $t->upstream_json('nano');
    my $chars = 0;
    $chars += length $_->{content} for @{ $sent->{messages} };
    my $p = ceil($chars / 4) + 3 * @{ $sent->{messages} } + 3;
    my $c = ceil(length($reply) / 4);
    return $p * $PRICE{nano}[0] + $c * $PRICE{nano}[1];
}

# ---------------------------------------------------------------- verdicts

{
    my ($r, $rec, $calls) = triaged('Say hello to my friend.', triage => 'simple',
                                    headers => { Authorization => 'Bearer client-key' });
    is route_of($r), 'mini/default', 'simple: no triage rule matches, the default answers';
    is $calls, 1, 'simple: one triage request';
    is_deeply [ @{ $rec->{triage} }{qw(verdict cached status)} ], [ 'simple', JSON::PP::false(), 200 ],
        'simple: the record has the verdict';
    is $rec->{triage_error}, undef, 'simple: no triage_error';

    my $sent = $t->upstream_json('nano');
    is $sent->{model}, 'nano-1', 'the triage request names the provider model';
    is $sent->{max_tokens}, 8, 'max_tokens defaults to 8';
    is $sent->{stream}, JSON::PP::false(), 'the triage request is not streamed';
    like $sent->{messages}[0]{content}, qr/one word: "simple" .* or "complex"/,
        'the default prompt asks for simple or complex';
    is_deeply $sent->{messages}[1], { role => 'user', content => 'Say hello to my friend.' },
        'the user message is the current message';

    my $head = $t->capture('nano')->{headers};
    is_deeply $head->{authorization}, ['Bearer sk-nano'],
        "the triage model's key, never the client's";
    is_deeply $head->{'content-type'}, ['application/json'], 'the body is JSON';

    is $rec->{triage}{cost_usd}, usd(triage_cost('simple')) + 0, 'simple: the triage cost';
    my $answer = $rec->{attempts}[0]{cost_usd};
    cmp_ok abs($rec->{cost_usd} - ($answer + $rec->{triage}{cost_usd})), '<', 1e-12,
        'cost_usd is the answer and the triage call';
}

{
    my ($r, $rec, $calls) = triaged('Prove that there are infinitely many primes.',
                                    triage => 'Complex.');
    is route_of($r), 'large/triaged', 'complex: the triage rule sends it to large';
    is $calls, 1, 'complex: one triage request';
    is $rec->{triage}{verdict}, 'complex', 'complex: the first word, in lower case';
    is $r->{headers}{'x-llm-triage'}, 'complex', '$llm_router_triage';
    is $t->capture('large')->{headers}{authorization}[0], 'Bearer sk-large',
        'the model answering has its own key';
}

{
    my ($r, $rec, $calls) = triaged('What is 2 + 2?', triage => '?!? ...');
    is route_of($r), 'mini/default', 'garbage: the next rule applies';
    is $r->{status}, 200, 'garbage: the client is answered';
    is $rec->{triage}{verdict}, undef, 'garbage: no verdict';
    is $rec->{triage_error}, 'no_label', 'garbage: triage_error no_label';
    is $r->{headers}{'x-llm-triage'}, undef, 'garbage: no $llm_router_triage';
    ok $rec->{triage}{cost_usd} > 0, 'garbage: the billed call still counts';
}

{
    my ($r, $rec) = triaged('Is this unreadable?', path => '/html');
    is route_of($r), 'mini/default', 'html answer: the next rule applies';
    is $rec->{triage_error}, 'unreadable', 'html answer: triage_error unreadable';
}

{
    my ($r, $rec) = triaged('A plain answer', path => '/plain');
    is route_of($r), 'large/triaged', 'a text/plain answer is the label';
    is $rec->{triage}{verdict}, 'complex', 'text/plain: verdict';
}

{
    my ($r, $rec) = triaged('An error', triage => 'complex', status => 503);
    is route_of($r), 'mini/default', 'a 503 of the triage model: the next rule applies';
    is_deeply [ $rec->{triage_error}, $rec->{triage}{status} ], [ 'status', 503 ],
        'a 503: triage_error status, and the status';
}

{
    my ($r, $rec) = triaged('Nobody listens', path => '/down');
    is route_of($r), 'mini/default', 'triage model down: the next rule applies';
    is_deeply [ $rec->{triage_error}, $rec->{triage}{status} ], [ 'upstream', 502 ],
        'triage model down: triage_error upstream, 502';
}

{
    my ($r, $rec) = triaged('Format this', path => '/json',
                            triage => '```json {"reason":"easy","label":"COMPLEX"} ```');
    is route_of($r), 'large/triaged', 'field=label: the label is a JSON field';
    ($r, $rec) = triaged('Format this too', path => '/json', triage => 'complex');
    is $rec->{triage_error}, 'no_label', 'field=label: no JSON object, no label';
}

{
    my ($r, $rec) = triaged('Stream it', triage => 'complex', fields => { stream => JSON::PP::true() });
    is route_of($r), 'large/triaged', 'a stream is triaged';
    is $r->{events}[-1], '[DONE]', 'and streamed to its end';
    is $rec->{usage_source}, 'response', 'with its usage';
}

{
    my ($r, $rec) = triaged('Fail over', path => '/chain', triage => 'complex');
    is route_of($r), 'large/triaged', 'the triaged model fails over to its fallback';
    is_deeply [ map { $_->{model} } @{ $rec->{attempts} } ], [ 'dead', 'large' ],
        'both tries are in the record';
}

# ------------------------------------------------------------ short-circuit

{
    my ($r, $rec, $calls) = triaged("Fix this:\n```python\ndef f(x):\n    return x +\n```\n",
                                    triage => 'simple');
    is route_of($r), 'large/code', 'a rule before the triage rule matches';
    is $calls, 0, 'the triage model is not asked';
    is $rec->{triage}, undef, 'the record has no triage';
}

# ---------------------------------------------------------------- timeout

{
    my ($r, $rec, $calls, $elapsed) = triaged('Think slowly', triage => 'complex', delay => 4000);
    is route_of($r), 'mini/default', 'slow triage: the next rule applies';
    is $rec->{triage_error}, 'timeout', 'slow triage: triage_error timeout';
    cmp_ok $elapsed, '>=', 0.9, 'the request waited for the timeout';
    cmp_ok $elapsed, '<', 3, 'but not for the slow answer';
    cmp_ok $rec->{triage}{latency_ms}, '>=', 990, 'the triage latency is the timeout';
    like $t->error_log, qr/triage failed: timeout/, 'the error log says why';
}

# a slow triage holds its own request only, not the worker

{
    my $slow = $t->connect;
    my $body = LLMRouterTest::json_encode({ model => 'auto', messages => [ { role => 'user', content => 'slow one' } ] });
    print $slow "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              . "Content-Type: application/json\r\nX-Triage: complex\r\nX-Triage-Delay: 4000\r\n"
              . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    sleep 0.2;

    my $t0 = time;
    my $r = $t->ask("Fix:\n```c\nint main(void) { return 0; }\n```\n");
    my $quick = time - $t0;
    is route_of($r), 'large/code', 'another request on the same worker is answered';
    ok !IO::Select->new($slow)->can_read(0), 'while the slow one still waits';
    cmp_ok $quick, '<', 0.5, 'without waiting for the slow triage';

    my ($raw) = LLMRouterTest::read_all($slow, 10);
    like $raw, qr{^HTTP/1.1 200}, 'the slow one is answered after its timeout';
    $t->next_record('llm.log') for 1 .. 2;
}

# ---------------------------------------------------------------- cache

{
    my ($r, $rec, $calls) = triaged('Cache me', path => '/cached', triage => 'complex');
    is_deeply [ route_of($r), $calls, $rec->{triage}{cached} ], [ 'large/triaged', 1, JSON::PP::false() ],
        'first time: asked';
    ($r, $rec, $calls) = triaged('Cache me', path => '/cached', triage => 'simple');
    is_deeply [ route_of($r), $calls, $rec->{triage}{cached} ], [ 'large/triaged', 0, JSON::PP::true() ],
        'the same prompt again: the cached verdict, no triage request';
    is $rec->{triage}{cost_usd}, 0, 'a cached verdict costs nothing';
    ($r, $rec, $calls) = triaged('Cache me too', path => '/cached', triage => 'simple');
    is_deeply [ route_of($r), $calls ], [ 'mini/default', 1 ], 'another prompt: asked';
    ($r, $rec, $calls) = triaged('Cache me', triage => 'simple');
    is_deeply [ route_of($r), $calls ], [ 'mini/default', 1 ], 'cache=off: always asked';
}

{
    # a failed triage is not cached
    my (undef, $rec, $calls) = triaged('Fail once', path => '/cached', triage => 'x', status => 500);
    is $rec->{triage_error}, 'status', 'a failure';
    my ($r, undef, $again) = triaged('Fail once', path => '/cached', triage => 'complex');
    is_deeply [ route_of($r), $again ], [ 'large/triaged', 1 ], 'is asked again';
}

# ---------------------------------------------------------------- metrics

{
    my $metrics = sub {
        my $body = $t->http(path => '/metrics')->{body};
        my %m;
        $m{$1} = $2 while $body =~ /^(llm_router_triage_total\{[^}]*\}|llm_router_(?:cost_usd|prompt_tokens)_total\{model="nano"\}) (\S+)$/mg;
        return \%m;
    };
    my $before = $metrics->();
    my (undef, $asked) = triaged('Count me', path => '/cached', triage => 'complex');
    triaged('Count me', path => '/cached', triage => 'complex');
    my (undef, $failed) = triaged('Count my failure', triage => 'x', status => 500);
    my $after = $metrics->();
    my %delta = map { $_ => ($after->{$_} // 0) - ($before->{$_} // 0) } keys %$after;
    is_deeply [ @delta{ map { "llm_router_triage_total{model=\"nano\",result=\"$_\"}" }
                          qw(verdict cached status) } ], [ 1, 1, 1 ],
        'llm_router_triage_total: a verdict, a cached one, a failure';
    cmp_ok abs($delta{'llm_router_cost_usd_total{model="nano"}'} - $asked->{triage}{cost_usd}), '<', 1e-12,
        'the triage call costs under the triage model';
    cmp_ok $delta{'llm_router_prompt_tokens_total{model="nano"}'}, '>', 0, 'with its tokens';
}

# ---------------------------------------------------------------- history

{
    my @m = ({ role => 'system', content => 'You help.' },
             LLMRouterTest::convo('first question', 'first answer', 'second question', 'a long second answer'),
             { role => 'user', content => 'and now?' });
    my ($r, $rec) = triaged(undef, path => '/history', triage => 'simple', messages => \@m);
    my $sent = $t->upstream_json('nano');
    is $sent->{messages}[0]{content}, 'Say simple or complex.', 'llm_router_triage_prompt';
    is $sent->{messages}[1]{content},
       "Conversation so far:\nassistant: a long second answer\n\nRequest:\nand now?",
       'history=6: the last 24 bytes of history at most, whole messages first';

    my $big = words(600);
    ($r, $rec) = triaged(undef, triage => 'simple',
                         messages => [ LLMRouterTest::convo('early', 'reply', $big) ]);
    is $r->{status}, 200, 'a body of several buffers';
    my $content = $t->upstream_json('nano')->{messages}[1]{content};
    is $content, "Conversation so far:\nuser: early\nassistant: reply\n\nRequest:\n"
                 . substr($big, 0, 2048),
       'from a temporary file: the history, and the head of the current message, 2048 bytes';
}

# ---------------------------------------------------------------- explain

{
    my $r = $t->chat(path => '/explain', headers => { 'X-Triage' => 'complex' },
                     body => { model => 'auto', messages => [ { role => 'user', content => 'explain me' } ] });
    is $r->{json}{rule}, 'triaged', 'llm_router_explain shows the triage decision';
    is $r->{json}{triage}{verdict}, 'complex', 'and the verdict';
}

$t->stop;

# ---------------------------------------------------------------- config

my $c = LLMRouterTest->new;
my $models = 'llm_router_model a { url http://127.0.0.1:1/; auth none; }
              llm_router_model b { url http://127.0.0.1:1/; auth none; }';

is $c->config_error($models, 'llm_router_rule t triage=hard b;'),
   'a "triage" condition needs "llm_router_triage" in "llm_router_rule" in nginx.conf:N',
   'a triage condition needs llm_router_triage';
is $c->config_error($models, 'llm_router_triage /t model=c; llm_router_rule t triage=hard b;'),
   'unknown model "c" in "llm_router_triage" in nginx.conf:N', 'unknown triage model';
is $c->config_error($models, 'llm_router_triage /t;'),
   '"llm_router_triage" needs model=NAME: the model whose name, key and price the triage uses in nginx.conf:N',
   'model= is required';
is $c->config_error($models, 'llm_router_triage /t model=a cache=1m;'),
   'the cache of "llm_router_triage" needs "llm_router_zone" in nginx.conf:N',
   'the cache needs a zone';
is $c->config_error($models, 'llm_router_triage /t model=a timeout=soon;'),
   'invalid parameter "timeout=soon" in "llm_router_triage" in nginx.conf:N', 'bad timeout';
is $c->config_error($models, 'llm_router_triage t model=a;'),
   'invalid URI "t" in "llm_router_triage": the URI of a location expected in nginx.conf:N',
   'a location URI';
is $c->config_error($models, 'llm_router_rule t triage=very.hard b;'),
   'invalid condition "triage=very.hard" in "llm_router_rule": invalid label "very.hard", '
   . 'up to 32 letters, digits, "_" or "-" expected in nginx.conf:N', 'bad label';
is $c->config_error($models, 'llm_router_triage /t model=a; llm_router_rule t triage=hard b;'),
   'passed', 'a triage without a zone has no cache';

done_testing;
