#!/usr/bin/perl
# The official SDKs as clients: `openai` (Chat Completions and Responses),
# `@anthropic-ai/sdk` (Messages) and the AI SDK (`ai` + `@ai-sdk/openai`),
# run by node on the scripts of t/sdk/ against nginx and the mock
# providers, streamed and not.  Each script prints one JSON line of what
# it observed per case; the assertions are here.
#
# Each request is tagged with its case (X-SDK-Case), and nginx's log
# shows what the module made of it: the dialect, the model, the tokens,
# which must be those the SDK saw.
#
# Every client sends its own key, "client-key": the mocks accept only the
# model's key (sk-mini, sk-ant, sk-resp) where they look for it and
# answer 401 to anything else, and each case checks that the one request
# it made reached the mock it should, without "client-key" in any header
# (the Anthropic SDK sends its key as Authorization: Bearer, not where an
# Anthropic provider looks for it).  Each case is a run of node of its
# own, so that the mocks' last request is that case's.
#
# Needs node and t/sdk/node_modules (`make test` installs both: npm ci in
# t/sdk); skipped without them.  LLMR_SDK_CASES="openai:chat ai:chat.stream"
# runs only those cases.

use strict;
use warnings;

use Test::More;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(json_encode json_decode);

my $SDK = "$LLMRouterTest::REPO/t/sdk";
my $SCRIPT_SECONDS = 60;        # a case gives up after 20 s itself

my ($node) = grep { -x } map { "$_/node" } split /:/, $ENV{PATH} // '';
plan skip_all => 'node is not installed (apt-get install nodejs npm)' unless $node;
plan skip_all => "$SDK/node_modules is missing (make test installs it: npm ci in t/sdk)"
    unless -d "$SDK/node_modules";
my ($major) = `'$node' --version` =~ /^v(\d+)\./;
plan skip_all => "node 18 or later needed, not " . ($major // '?') unless ($major // 0) >= 18;

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');                         # Bearer
$t->mock('claude', key => 'sk-ant', auth => 'x-api-key');   # x-api-key
$t->mock('resp', key => 'sk-resp');                         # Bearer

$t->config(<<'EOF')->run;
llm_router_zone llm 1m;
llm_router_model mini   { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
llm_router_model haiku  { api messages;  url http://127.0.0.1:%%PORT_claude%%/v1/messages;  model claude-haiku-4-5; key sk-ant; }
llm_router_model sonnet { api messages;  url http://127.0.0.1:%%PORT_claude%%/v1/messages;  model claude-sonnet-4-5; key sk-ant; }
llm_router_model nano   { api responses; url http://127.0.0.1:%%PORT_resp%%/v1/responses;   model gpt-5-nano; key sk-resp; }

log_format llm escape=none '{"case":"$http_x_sdk_case","log":$llm_router_log}';

server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
    access_log %%PREFIX%%/llm.log llm;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_read_timeout 10s;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    # Anthropic clients name a real model: routing by rules needs pinning
    # off (/pinned below keeps it)
    location = /v1/messages {
        llm_router on;
        llm_router_pin off;
        llm_router_rule thinking thinking sonnet;
        llm_router_default haiku;
        proxy_pass $llm_router_url;
    }

    location = /v1/responses {
        llm_router on;
        llm_router_default nano;
        proxy_pass $llm_router_url;
    }

    # base URL http://127.0.0.1:PORT/pinned: the dialect still comes from
    # the URI's ending
    location = /pinned/v1/messages {
        llm_router on;
        llm_router_rule thinking thinking sonnet;
        llm_router_default haiku;
        proxy_pass $llm_router_url;
    }

    # not routed: count_tokens, models, with the provider's key set here
    location /v1/ {
        access_log off;
        proxy_set_header x-api-key sk-ant;
        proxy_set_header Authorization "";
        proxy_pass http://127.0.0.1:%%PORT_claude%%;
    }
}
EOF

my $BASE = 'http://127.0.0.1:' . $t->port;
my @MOCKS = qw(mini claude resp);

# LLMR_SDK_CASES: "script:case" words, the cases to run (all without it)
my %ONLY;
my $only = $ENV{LLMR_SDK_CASES} // '';
$ONLY{$1} = 1 while $only =~ /(\w+:\S+)/g;

# Run t/sdk/$script.mjs for $case: its record ({ case, result } or
# { case, error }), or undef, and what to show then: how node ended,
# what it printed.
sub run_sdk {
    my ($script, $case) = @_;
    my $err = $t->prefix . "/node-$script-$case.stderr";
    pipe my $rd, my $wr or die "pipe: $!\n";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        close $rd;
        delete @ENV{ grep { /^(?:OPENAI|ANTHROPIC|AI_GATEWAY)_|^(?:https?|all|no)_proxy$/i } keys %ENV };
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $wr or POSIX::_exit(126);
        open STDERR, '>', $err or POSIX::_exit(126);
        chdir $SDK or POSIX::_exit(126);
        { exec $node, "$script.mjs", $BASE, $case }
        POSIX::_exit(127);
    }
    close $wr;

    my ($out, $timed_out) = ('', 0);
    my $sel = IO::Select->new($rd);
    my $deadline = time + $SCRIPT_SECONDS;
    while (1) {
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) {
            $timed_out = 1;
            last;
        }
        my $n = sysread $rd, $out, 65536, length $out;
        last unless $n;
    }
    close $rd;
    kill 'KILL', $pid if $timed_out;
    waitpid $pid, 0;
    my $status = $?;

    my ($rec) = grep { ref $_ eq 'HASH' && ($_->{case} // '') eq $case }
                map { eval { json_decode($_) } } split /\n/, $out;
    my $ended = $timed_out ? "killed after ${SCRIPT_SECONDS}s"
              : $status & 127 ? 'signal ' . ($status & 127)
              : 'exit ' . ($status >> 8);
    return ($rec, "node $script.mjs $case: $ended\n$out" . $t->read_file($err));
}

sub show { json_encode($_[0]) }

sub sent { return { map { $_ => scalar(() = $t->requests($_)) } @MOCKS } }

# One subtest per case: node runs it, then $check->($result) when the
# script observed one, else a failure that shows the error the SDK
# raised (or node's output when the case printed nothing).  The case's
# one request must have reached $mock (none, when undef) and no other,
# without the client's key.
sub case_ok {
    my ($script, $name, $mock, $check) = @_;
    return if %ONLY && !$ONLY{"$script:$name"};
    my $before = sent();
    my ($rec, $output) = run_sdk($script, $name);
    my $after = sent();

    subtest "$script: $name" => sub {
        if (!$rec) {
            fail('the script printed a result');
            diag($output);
        } elsif ($rec->{error}) {
            fail('the SDK call succeeded');
            my $e = $rec->{error};
            diag("$e->{name}: $e->{message}");
            diag(show({ map { $_ => $e->{$_} } grep { $_ ne 'stack' } keys %$e }));
            diag($e->{stack}) if $e->{stack};
        } else {
            $check->($rec->{result});
        }

        is_deeply { map { $_ => $after->{$_} - $before->{$_} } @MOCKS },
                  { map { $_ => defined $mock && $_ eq $mock ? 1 : 0 } @MOCKS },
                  'requests reached ' . ($mock // 'no provider');
        unlike $t->capture($mock)->{head}, qr/client-key/,
               "the client's key did not reach $mock" if defined $mock;
    };
}

# The module's log record of the request of script/case, of the fields
# of %$want, is %$want (true/false as 'true'/'false').
sub log_is {
    my ($tag, $want) = @_;
    my $deadline = time + 5;
    my @recs;
    until (@recs = grep { ($_->{case} // '') eq $tag } $t->access_log_records('llm.log')) {
        last if time > $deadline;
        sleep 0.05;
    }
    is scalar @recs, 1, "$tag: one log record" or return;
    my $rec = $recs[0]{log} // {};
    my %got = map { my $v = $rec->{$_};
                    $_ => JSON::PP::is_bool($v) ? ($v ? 'true' : 'false') : $v } keys %$want;
    is_deeply \%got, $want, "$tag: the log record" or diag(show($rec));
}

sub nonempty { my ($s, $name) = @_; ok(defined $s && !ref $s && length $s, $name) or diag('got: ' . show([$s])) }
sub positive { my ($n, $name) = @_; ok(defined $n && !ref $n && $n =~ /^\d+$/ && $n > 0, $name) or diag('got: ' . show([$n])) }
sub model_is { my ($r, $want) = @_; is $r->{headers}{'x-llm-model'}, $want, "X-LLM-Model: $want" }

# ------------------------------------------------------------------ openai

case_ok(openai => 'chat', 'mini', sub {
    my ($c) = @_;
    model_is($c, 'mini');
    is $c->{model}, 'gpt-4o-mini', 'the model the provider answered as';
    nonempty($c->{content}, 'choices[0].message.content');
    positive($c->{usage}{prompt_tokens}, 'usage.prompt_tokens');
    positive($c->{usage}{completion_tokens}, 'usage.completion_tokens');
    log_is('openai/chat', { api => 'chat', model => 'mini', rule => 'default',
                            stream => 'false', status => 200,
                            prompt_tokens => $c->{usage}{prompt_tokens},
                            completion_tokens => $c->{usage}{completion_tokens} });
});

case_ok(openai => 'chat.stream', 'mini', sub {
    my ($c) = @_;
    model_is($c, 'mini');
    is $c->{loop_error}, undef,
       'text += chunk.choices[0].delta.content does not throw';
    nonempty($c->{text}, 'the deltas make a text');
    is $c->{chunks_with_empty_choices}, 0, 'no chunk has "choices": []';
    is $c->{chunks_with_usage_key}, 0,
       'no chunk has a "usage" (not even null) when the client asked for none';
    is_deeply $c->{finish_reasons}, ['stop'], 'one finish_reason: stop';
    # the module still counted the tokens, of a usage the client never saw
    log_is('openai/chat.stream', { api => 'chat', model => 'mini', stream => 'true',
                                   status => 200, usage_source => 'response' });
});

case_ok(openai => 'chat.stream.usage', 'mini', sub {
    my ($c) = @_;
    model_is($c, 'mini');
    nonempty($c->{text}, 'the deltas make a text');
    is_deeply $c->{last_choices}, [], 'the last chunk has "choices": []';
    positive($c->{last_usage}{prompt_tokens}, 'the last chunk: usage.prompt_tokens');
    positive($c->{last_usage}{completion_tokens}, 'the last chunk: usage.completion_tokens');
    is $c->{chunks_with_usage}, 1, 'only the last chunk has a usage';
    log_is('openai/chat.stream.usage',
           { api => 'chat', model => 'mini', stream => 'true', status => 200,
             prompt_tokens => $c->{last_usage}{prompt_tokens},
             completion_tokens => $c->{last_usage}{completion_tokens} });
});

case_ok(openai => 'responses', 'resp', sub {
    my ($c) = @_;
    model_is($c, 'nano');
    is $c->{model}, 'gpt-5-nano', 'the model the provider answered as';
    is $c->{object}, 'response', 'object: response';
    is $c->{status}, 'completed', 'status: completed';
    nonempty($c->{output_text}, 'output_text');
    positive($c->{usage}{input_tokens}, 'usage.input_tokens');
    positive($c->{usage}{output_tokens}, 'usage.output_tokens');
    log_is('openai/responses', { api => 'responses', model => 'nano', rule => 'default',
                                 stream => 'false', status => 200,
                                 prompt_tokens => $c->{usage}{input_tokens},
                                 completion_tokens => $c->{usage}{output_tokens} });
});

case_ok(openai => 'responses.stream', 'resp', sub {
    my ($c) = @_;
    model_is($c, 'nano');
    my %types = map { $_ => 1 } @{ $c->{types} || [] };
    ok $types{$_}, "an event $_" or diag(show($c->{types}))
        for qw(response.created response.output_text.delta response.completed);
    is $c->{types}[-1], 'response.completed', 'response.completed comes last';
    is_deeply $c->{sequence_numbers}, [0 .. $c->{events} - 1],
              'sequence_number counts the events from 0';
    nonempty($c->{text}, 'the deltas make a text');
    is $c->{completed_text}, $c->{text}, 'the completed response has the same text';
    is $c->{completed_model}, 'gpt-5-nano', 'the completed response: model';
    positive($c->{completed_usage}{input_tokens}, 'the completed response: usage.input_tokens');
    positive($c->{completed_usage}{output_tokens}, 'the completed response: usage.output_tokens');
    log_is('openai/responses.stream',
           { api => 'responses', model => 'nano', stream => 'true', status => 200,
             prompt_tokens => $c->{completed_usage}{input_tokens},
             completion_tokens => $c->{completed_usage}{output_tokens} });
});

# --------------------------------------------------------------- anthropic

case_ok(anthropic => 'messages', 'claude', sub {
    my ($c) = @_;
    model_is($c, 'haiku');
    is $c->{headers}{'x-llm-rule'}, 'default', 'X-LLM-Rule: default';
    is $c->{model}, 'claude-haiku-4-5', 'the model the provider answered as';
    is $c->{type}, 'message', 'type: message';
    is $c->{content_types}[0], 'text', 'content[0] is a text block';
    nonempty($c->{text}, 'content[0].text');
    positive($c->{usage}{input_tokens}, 'usage.input_tokens');
    positive($c->{usage}{output_tokens}, 'usage.output_tokens');
    log_is('anthropic/messages', { api => 'messages', model => 'haiku', rule => 'default',
                                   stream => 'false', status => 200,
                                   prompt_tokens => $c->{usage}{input_tokens},
                                   completion_tokens => $c->{usage}{output_tokens} });
});

case_ok(anthropic => 'messages.thinking', 'claude', sub {
    my ($c) = @_;
    model_is($c, 'sonnet');
    is $c->{headers}{'x-llm-rule'}, 'thinking', 'X-LLM-Rule: thinking';
    is $c->{model}, 'claude-sonnet-4-5', 'the model the provider answered as';
    nonempty($c->{text}, 'the text');
    log_is('anthropic/messages.thinking', { api => 'messages', model => 'sonnet',
                                            rule => 'thinking', status => 200 });
});

case_ok(anthropic => 'messages.pinned', 'claude', sub {
    my ($c) = @_;
    model_is($c, 'sonnet');
    is $c->{headers}{'x-llm-rule'}, 'client', 'X-LLM-Rule: client (pinned)';
    is $c->{model}, 'claude-sonnet-4-5', 'the model the provider answered as';
    nonempty($c->{text}, 'the text');
    log_is('anthropic/messages.pinned', { api => 'messages', model => 'sonnet',
                                          rule => 'client', status => 200 });
});

case_ok(anthropic => 'messages.stream', 'claude', sub {
    my ($c) = @_;
    model_is($c, 'haiku');
    my %types = map { $_ => 1 } @{ $c->{event_types} || [] };
    ok $types{$_}, "an event $_" or diag(show($c->{event_types}))
        for qw(message_start content_block_delta message_delta message_stop);
    nonempty($c->{text}, 'finalMessage(): the text');
    is $c->{text}, $c->{deltas}, 'finalMessage() has the text of the deltas';
    is $c->{model}, 'claude-haiku-4-5', 'finalMessage(): model';
    is $c->{stop_reason}, 'end_turn', 'finalMessage(): stop_reason';
    positive($c->{usage}{input_tokens}, 'finalMessage(): usage.input_tokens');
    positive($c->{usage}{output_tokens}, 'finalMessage(): usage.output_tokens');
    log_is('anthropic/messages.stream',
           { api => 'messages', model => 'haiku', stream => 'true', status => 200,
             prompt_tokens => $c->{usage}{input_tokens},
             completion_tokens => $c->{usage}{output_tokens} });
});

# nginx answers itself: the provider gets nothing
case_ok(anthropic => 'messages.error', undef, sub {
    my ($c) = @_;
    ok !$c->{unexpected_success}, 'the request failed'
        or diag(show($c->{unexpected_success}));
    is $c->{class}, 'BadRequestError', 'the SDK raised BadRequestError';
    ok $c->{is_bad_request}, 'instanceof Anthropic.BadRequestError';
    is $c->{status}, 400, 'status 400';
    is ref $c->{body}, 'HASH', 'the error body is JSON'
        or diag(show($c->{body}));
    is $c->{body}{type}, 'error', 'the Anthropic error shape: type error';
    is $c->{error_type}, 'invalid_request_error', 'error.type: invalid_request_error';
    my $m = $c->{api_message};
    ok defined $m && !ref $m && $m =~ /[a-z]{3,}.*\s.*[a-z]{3,}/i && $m !~ /^\s*[\[{]/,
       'error.message is readable text, not JSON' or diag('got: ' . show([$m]));
    ok defined $m && index($c->{message}, $m) >= 0,
       "the exception's message has it" or diag('message: ' . $c->{message});
    log_is('anthropic/messages.error', { api => 'messages', model => undef,
                                         status => 400, attempts => [] });
});

# not routed (location /v1/): the SDK through a plain proxy_pass
case_ok(anthropic => 'count_tokens', 'claude', sub {
    my ($c) = @_;
    positive($c->{input_tokens}, 'input_tokens');
});

case_ok(anthropic => 'models', 'claude', sub {
    my ($c) = @_;
    is_deeply $c->{ids}, ['mock-model'], 'the model list';
});

# ---------------------------------------------------------------------- ai

for (['responses', 'resp', 'nano', 'gpt-5-nano'], ['chat', 'mini', 'mini', 'gpt-4o-mini']) {
    my ($api, $mock, $model, $upstream) = @$_;
    for my $how (qw(generate stream)) {
        case_ok(ai => "$api.$how", $mock, sub {
            my ($c) = @_;
            model_is($c, $model);
            is $c->{model}, $upstream, 'response.modelId';
            nonempty($c->{text}, $how eq 'stream' ? 'textStream makes a text' : 'text');
            is $c->{finish_reason}, 'stop', 'finishReason: stop';
            positive($c->{usage}{inputTokens}, 'usage.inputTokens');
            positive($c->{usage}{outputTokens}, 'usage.outputTokens');
            log_is("ai/$api.$how", { api => $api, model => $model, rule => 'client',
                                     stream => $how eq 'stream' ? 'true' : 'false',
                                     status => 200,
                                     prompt_tokens => $c->{usage}{inputTokens},
                                     completion_tokens => $c->{usage}{outputTokens} });
        });
    }
}

$t->stop;
done_testing;
