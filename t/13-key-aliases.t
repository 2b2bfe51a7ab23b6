#!/usr/bin/perl
# Model smuggling through the spelling of a key: a provider whose JSON
# decoder matches keys without regard to case (Go's encoding/json, also
# folding the long s and the Kelvin sign), or stops at a NUL, reads
# "MODEL", "Model", "ſtream" or "model\u0000" as a key the router never
# read.  The mock decodes "model" as Go does; the router refuses every
# such key with a 400 in the client's dialect, and sends nothing.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(route_of json_decode);

my @bodies = (
    ['MODEL after model', '{"model":"auto","messages":[{"role":"user","content":"hi"}],"MODEL":"llama-405b"}'],
    ['Model alone',       '{"Model":"gpt-4.5-preview","messages":[{"role":"user","content":"hi"}]}'],
    ['the Kelvin sign',   qq({"model":"auto","messages":[{"role":"user","content":"hi"}],"max_to\xe2\x84\xaaens":900000})],
    ['a NUL after model', '{"model":"auto","messages":[{"role":"user","content":"hi"}],"model\u0000":"llama-405b"}'],
    ['a long s in stream', qq({"model":"auto","messages":[{"role":"user","content":"hi"}],"\xc5\xbftream":true})],
    ['Messages',          '{"model":"auto","messages":[{"role":"user","content":"hi"}],"Messages":[]}'],
);

plan tests => 2 * @bodies + 6;

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('claude', key => 'sk-ant', auth => 'x-api-key');
$t->config(<<'EOF')->run;
llm_router_model mini  { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; }
llm_router_model haiku { api messages; model claude-haiku-4-5; key sk-ant;
                         url http://127.0.0.1:%%PORT_claude%%/v1/messages; }
server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
    location = /v1/messages {
        llm_router on;
        llm_router_default haiku;
        proxy_pass $llm_router_url;
    }
}
EOF

# the danger: the provider itself serves the smuggled model
my $direct = $t->http(port => $t->mock_info('mini')->{port}, method => 'POST', path => '/v1/chat/completions',
                      headers => ['Content-Type' => 'application/json', Authorization => 'Bearer sk-mini'],
                      body => $bodies[0][1]);
is $direct->{json}{model}, 'llama-405b', 'the mock reads MODEL as Go would';

for my $b (@bodies) {
    my ($name, $body) = @$b;
    my $before = () = $t->requests('mini');
    my $r = $t->chat(body => $body);
    my $after = () = $t->requests('mini');
    is_deeply [$r->{status}, $r->{json}{error}{type}], [400, 'invalid_request_error'], "$name: refused";
    is $after - $before, 0, "$name: nothing sent";
}

my $r = $t->http(method => 'POST', path => '/v1/messages', headers => ['Content-Type' => 'application/json'],
                 body => '{"model":"x","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"SYSTEM":"x"}');
is_deeply [$r->{status}, $r->{json}{type}, $r->{json}{error}{message}],
          [400, 'error', "a key that a provider may read as 'system' is not accepted in request body"],
          'Messages: a folded key refused in the Anthropic shape';

# other keys and nested ones pass
$r = $t->chat(body => '{"model":"auto","messages":[{"role":"user","content":"hi"}],"metadata":{"MODEL":"x"},"Modell":1}');
is "$r->{status} " . route_of($r), '200 mini/default', 'a nested MODEL and other keys pass';
is $r->{json}{model}, 'gpt-4o-mini', '  and the model is the router\'s';

$r = $t->chat(body => '{"MODEL":"x","model":"auto","messages":[{"role":"user","content":"hi"}]}');
is $r->{status}, 400, 'MODEL before model: refused too';

$t->stop;
