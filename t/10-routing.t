#!/usr/bin/perl
# Routing: every condition, AND of conditions, negation, first match wins,
# the default, the history window, keyword matching and variables.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(user convo words);

my $t = LLMRouterTest->new;
$t->mock($_) for qw(mini large);
$t->config(<<'EOF')->run;
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; auth none; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      auth none; }
llm_router_model coder { url %%URL_large%%; model gpt-coder;   auth none; }

llm_router_keywords complex "analyze" "explain why" "compare" "design";
llm_router_keywords greet   "hello" "good morning";

map $http_x_team $team_tier {
    default   basic;
    research  premium;
}

server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_rule code     code              coder;
        llm_router_rule long     tokens>2000       large;
        llm_router_rule complex  keywords=complex  large;
        llm_router_rule gold     $http_x_tier=gold large;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /combo {
        llm_router on;
        llm_router_rule both   messages>2 keywords=complex  large;
        llm_router_rule older  !messages<5                  coder;
        llm_router_rule tools  tools                        large;
        llm_router_rule short  tokens<3 !keywords=greet     coder;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /vars {
        llm_router on;
        llm_router_rule team   $team_tier=premium           large;
        llm_router_rule admin  $http_x_user~^admin-[0-9]+$  large;
        llm_router_rule root   $http_x_user~*^root          coder;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /negvar {
        llm_router on;
        llm_router_rule notgold !$http_x_tier=gold large;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /history2 {
        llm_router on;
        llm_router_history 2;
        llm_router_rule long tokens>2000 large;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
}
EOF

my $fence = "Why does this fail?\n```\nx = 1\n```";
my $big = words(2500);
my $chat = 'tell me more about it';

# an assistant message calling a tool, as in an agent loop
sub tool_call {
    return { role => 'assistant', content => undef, tool_calls => [{
        id => 'c1', type => 'function', function => { name => 'read_file', arguments => '{}' } }] };
}
my %gold = ('X-Tier' => 'gold');

# [name, path, messages, expected route, extra request headers, extra fields]
my @cases = (
    # conditions one by one, on the main location
    ['plain question -> default', '/v1/chat/completions',
     [user('What is the capital of France?')], 'mini/default@mini:gpt-4o-mini'],
    ['fenced code', '/v1/chat/completions', [user($fence)], 'coder/code@large:gpt-coder'],
    ['two code-like lines', '/v1/chat/completions',
     [user("int x = 1;\nreturn x;")], 'coder/code@large:gpt-coder'],
    ['one code-like line is not code', '/v1/chat/completions',
     [user('Remember to end each statement with a semicolon;')], 'mini/default@mini:gpt-4o-mini'],
    ['code in the last 3 history messages', '/v1/chat/completions',
     [convo($fence, 'Looks fine.', 'Are you sure?')], 'coder/code@large:gpt-coder'],
    ['code 4 messages back is not seen', '/v1/chat/completions',
     [convo($fence, 'ok', 'thanks', 'welcome', 'bye')], 'mini/default@mini:gpt-4o-mini'],
    ['long prompt', '/v1/chat/completions', [user(words(3000))], 'large/long@large:gpt-4o'],
    ['medium prompt is not long', '/v1/chat/completions',
     [user(words(500))], 'mini/default@mini:gpt-4o-mini'],
    ['history tokens add up', '/v1/chat/completions',
     [convo(words(1500), 'ok', words(1000))], 'large/long@large:gpt-4o'],
    ['6 history messages are counted', '/v1/chat/completions',
     [convo($big, 'a', 'b', 'c', 'd', 'e', 'now?')], 'large/long@large:gpt-4o'],
    ['8 messages back is outside the window', '/v1/chat/completions',
     [convo($big, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'now?')], 'mini/default@mini:gpt-4o-mini'],
    ['the current turn includes tool results (tokens)', '/v1/chat/completions',
     [user('Summarize the file'), tool_call(), { role => 'tool', tool_call_id => 'c1', content => words(3000) }],
     'large/long@large:gpt-4o'],
    ['the current turn includes tool results (code)', '/v1/chat/completions',
     [user('Why does it fail?'), tool_call(), { role => 'tool', tool_call_id => 'c1', content => $fence }],
     'coder/code@large:gpt-coder'],
    ['keyword', '/v1/chat/completions',
     [user('Please analyze these numbers')], 'large/complex@large:gpt-4o'],
    ['keyword is case-insensitive', '/v1/chat/completions',
     [user('COMPARE apples and oranges')], 'large/complex@large:gpt-4o'],
    ['keyword phrase', '/v1/chat/completions',
     [user('Explain why the sky is blue')], 'large/complex@large:gpt-4o'],
    ['keyword before punctuation', '/v1/chat/completions',
     [user('Can you compare?')], 'large/complex@large:gpt-4o'],
    ['phrase across a run of white space', '/v1/chat/completions',
     [user("Explain \n\t why it works")], 'large/complex@large:gpt-4o'],
    ['no match inside a word', '/v1/chat/completions',
     [user('Please reanalyze it')], 'mini/default@mini:gpt-4o-mini'],
    ['a phrase does not span content parts', '/v1/chat/completions',
     [{ role => 'user', content => [{ type => 'text', text => 'explain' },
                                    { type => 'text', text => 'why' }] }],
     'mini/default@mini:gpt-4o-mini'],
    ['keywords are whole words', '/v1/chat/completions',
     [user('The analyzer was redesigned by comparison')], 'mini/default@mini:gpt-4o-mini'],
    ['a phrase needs all its words in order', '/v1/chat/completions',
     [user('Explain how it works, and why')], 'mini/default@mini:gpt-4o-mini'],
    ['keyword in the history only', '/v1/chat/completions',
     [convo('Please analyze this', 'Done.', 'Thanks')], 'mini/default@mini:gpt-4o-mini'],
    ['keyword in a system message only', '/v1/chat/completions',
     [{ role => 'system', content => 'You analyze things.' }, user('hi')],
     'mini/default@mini:gpt-4o-mini'],
    ['the current message is the last user message', '/v1/chat/completions',
     [convo('Please analyze this', 'Sure, one moment.')], 'large/complex@large:gpt-4o'],
    ['keyword in text content parts', '/v1/chat/completions',
     [{ role => 'user', content => [{ type => 'text', text => 'please analyze' }] }],
     'large/complex@large:gpt-4o'],
    ['$http_x_tier=gold', '/v1/chat/completions', [user('hi')], 'large/gold@large:gpt-4o', \%gold],
    ['another header value', '/v1/chat/completions',
     [user('hi')], 'mini/default@mini:gpt-4o-mini', { 'X-Tier' => 'silver' }],
    ['header values match exactly', '/v1/chat/completions',
     [user('hi')], 'mini/default@mini:gpt-4o-mini', { 'X-Tier' => 'golden' }],
    ['first match wins (code before keywords and header)', '/v1/chat/completions',
     [user("Analyze this:\n```\nx\n```")], 'coder/code@large:gpt-coder', \%gold],
    ['first match wins (keywords before header)', '/v1/chat/completions',
     [user('Please analyze this')], 'large/complex@large:gpt-4o', \%gold],

    # AND, negation, messages, tools
    ['AND: both conditions', '/combo',
     [convo('analyze it', 'ok', 'now analyze more')], 'large/both@large:gpt-4o'],
    ['AND: one condition is not enough', '/combo',
     [user('Please analyze this table')], 'mini/default@mini:gpt-4o-mini'],
    ['messages: 3 without keyword', '/combo',
     [convo($chat, $chat, $chat)], 'mini/default@mini:gpt-4o-mini'],
    ['!messages<5 with 5 messages', '/combo',
     [convo(($chat) x 5)], 'coder/older@large:gpt-coder'],
    ['!messages<5 with 4 messages', '/combo',
     [convo(($chat) x 4)], 'mini/default@mini:gpt-4o-mini'],
    ['tools', '/combo', [user($chat)], 'large/tools@large:gpt-4o', undef,
     { tools => [{ type => 'function', function => { name => 'f', parameters => {} } }] }],
    ['empty tools array', '/combo', [user($chat)], 'mini/default@mini:gpt-4o-mini', undef,
     { tools => [] }],
    ['functions', '/combo', [user($chat)], 'large/tools@large:gpt-4o', undef,
     { functions => [{ name => 'f', parameters => {} }] }],
    ['tokens<3 and !keywords=greet', '/combo', [user('ok')], 'coder/short@large:gpt-coder'],
    ['negated keyword list blocks the rule', '/combo',
     [user('hello')], 'mini/default@mini:gpt-4o-mini'],

    # variables: map, exact value, regex, case-insensitive regex
    ['$var=value via a map', '/vars', [user('hi')], 'large/team@large:gpt-4o',
     { 'X-Team' => 'research' }],
    ['map default value', '/vars', [user('hi')], 'mini/default@mini:gpt-4o-mini',
     { 'X-Team' => 'sales' }],
    ['$var~regex', '/vars', [user('hi')], 'large/admin@large:gpt-4o',
     { 'X-User' => 'admin-42' }],
    ['$var~regex is anchored as written', '/vars', [user('hi')],
     'mini/default@mini:gpt-4o-mini', { 'X-User' => 'admin-42x' }],
    ['$var~regex is case-sensitive', '/vars', [user('hi')],
     'mini/default@mini:gpt-4o-mini', { 'X-User' => 'ADMIN-42' }],
    ['$var~*regex is case-insensitive', '/vars', [user('hi')],
     'coder/root@large:gpt-coder', { 'X-User' => 'RooTy' }],
    ['rule order among variables', '/vars', [user('hi')], 'large/team@large:gpt-4o',
     { 'X-User' => 'root', 'X-Team' => 'research' }],
    ['!$var=value without the header', '/negvar', [user('hi')], 'large/notgold@large:gpt-4o'],
    ['!$var=value with the header', '/negvar', [user('hi')],
     'mini/default@mini:gpt-4o-mini', \%gold],

    # llm_router_history 2
    ['history 2: 2 messages back counts', '/history2',
     [convo($big, 'ok', 'and?')], 'large/long@large:gpt-4o'],
    ['history 2: 4 messages back does not', '/history2',
     [convo($big, 'ok', 'and?', 'sure', 'more?')], 'mini/default@mini:gpt-4o-mini'],
);

plan tests => @cases + 1;

for my $c (@cases) {
    my ($name, $path, $messages, $want, $headers, $fields) = @$c;
    my %body = (model => 'auto', messages => $messages, %{ $fields || {} });
    is $t->route(path => $path, body => \%body, headers => $headers), $want, $name;
}

$t->stop;
