var player = createSprite(200, 200);
player.setAnimation("alien");
player.scale = 0.5;
var gem = createSprite(100, 100);
gem.setAnimation("gem");
gem.scale = 0.2;

function draw() {
  background("navy");
  player.scale = player.scale + 0.001;
  gem.scale = 0.2 + randomNumber(0, 2) / 100;
  if (keyDown("left")) {
    player.velocityX == -3;
  }
  if (keyDown("right")) {
    player.velocityX == 3;
  }
  drawSprites();
}
